"""Login-node tools over a run's JSONL log: ``watch``, ``compare`` and ``sync``.

Everything here reads what a History already wrote on the shared filesystem
(``<report_dir>/<run_id>.jsonl`` and, after ``finalize()``, its outdir); no
MPI, no GPU, no server needed except for ``sync``'s targets. The modules:

- :mod:`ezpz.runs.locate` -- ``RUN`` (a JSONL, a run id, a report_dir or an
  outdir) to a :class:`~ezpz.runs.locate.RunInfo`;
- :mod:`ezpz.runs.records` -- line-level reading that tells metric rows from
  lifecycle ``_event`` lines and stops at a torn (still being written) line;
- :mod:`ezpz.runs.tail` -- reading the end of a growing JSONL with bounded I/O;
- :mod:`ezpz.runs.watch`, :mod:`ezpz.runs.compare`, :mod:`ezpz.runs.sync`.

Nothing heavy (matplotlib, plotext, mlflow, wandb) is imported by this package
until a command needs it.
"""

from __future__ import annotations

from ezpz.runs.locate import RunInfo, RunNotFoundError, resolve_run

__all__ = ["RunInfo", "RunNotFoundError", "resolve_run"]
