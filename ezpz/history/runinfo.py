"""``RunInfo``: the facts about one run that History's parts need, frozen.

``History`` builds one and hands it to the parts it owns (the per-rank
flusher, ``finalize``), so that no part has to know ``History`` or read its
attributes: a part sees the run's identity and places, never the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunInfo"]


@dataclass(frozen=True)
class RunInfo:
    """Who the run is and where its files go, as ``History`` knows them.

    ``outdir`` is ``History(outdir=...)`` (None: ``{report_dir}/{run_id}``,
    see :meth:`default_outdir`); ``run_name`` is the human-readable name
    (None: the ``run_id``).
    """

    run_id: str
    rank: int = 0
    world_size: int = 1
    project_name: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    report_dir: Path = Path("./outputs/history")
    outdir: Path | None = None
    jsonl_path: Path | None = None
    run_name: str | None = None

    def default_outdir(self) -> Path:
        """Where finalize() writes when not told: ``outdir`` or ``{report_dir}/{run_id}``."""
        return self.outdir if self.outdir is not None else self.report_dir / self.run_id

    @property
    def display_name(self) -> str:
        """``run_name``, or the ``run_id`` when the run has no name."""
        return self.run_name or self.run_id
