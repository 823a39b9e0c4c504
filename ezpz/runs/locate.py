"""``RUN`` on the command line -> the run's JSONL, run id and finalize outdir.

``RUN`` may be:

- a JSONL file (``outputs/history/<run_id>.jsonl``, or a finalize outdir's
  ``metrics.jsonl``);
- a run id (``2026-01-01-120000-ab12cd``, or a unique prefix of one), looked up
  in the report directory (``--report-dir``, default ``./outputs/history``);
- a finalize outdir (holding ``metrics.jsonl``; the live JSONL beside it,
  ``<outdir>.jsonl``, is preferred when it exists);
- a report directory holding several runs: the newest JSONL is taken.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ezpz.runs.records import EVENT_FIELD, read_head

DEFAULT_REPORT_DIR = "./outputs/history"
FINALIZE_JSONL = "metrics.jsonl"


class RunNotFoundError(LookupError):
    """``RUN`` names no JSONL that exists."""


@dataclass(frozen=True)
class RunInfo:
    """Where a run's files are."""

    jsonl: Path
    run_id: str
    #: the finalize outdir (datasets, plots, report.md), when one exists
    outdir: Path | None = None
    run_name: str | None = None

    @property
    def label(self) -> str:
        """A short name for tables and legends."""
        return self.run_name or self.run_id


def _identity(jsonl: Path) -> tuple[str, str | None]:
    """(run id, run name) from the start event, else from the file name."""
    for line in read_head(jsonl):
        record = line.record
        if record is not None and record.get(EVENT_FIELD) == "start":
            run_id = record.get("run_id")
            name = record.get("run_name")
            if isinstance(run_id, str) and run_id:
                return run_id, name if isinstance(name, str) and name else None
            break
    if jsonl.name == FINALIZE_JSONL:
        return jsonl.parent.name, None
    return jsonl.stem, None


def _outdir_for(jsonl: Path, run_id: str) -> Path | None:
    if jsonl.name == FINALIZE_JSONL:
        return jsonl.parent
    for candidate in (jsonl.with_suffix(""), jsonl.parent / run_id):
        if candidate.is_dir():
            return candidate
    return None


def _info(jsonl: Path) -> RunInfo:
    run_id, name = _identity(jsonl)
    return RunInfo(jsonl=jsonl, run_id=run_id, outdir=_outdir_for(jsonl, run_id), run_name=name)


def _newest(paths: list[Path]) -> Path:
    return max(paths, key=lambda p: (p.stat().st_mtime, p.name))


def resolve_run(
    spec: str | os.PathLike[str], report_dir: str | os.PathLike[str] | None = None
) -> RunInfo:
    """The run ``spec`` names (see the module docstring); raises :class:`RunNotFoundError`."""
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return _info(path)
    if path.is_dir():
        sibling = path.parent / f"{path.name}.jsonl"
        if (path / FINALIZE_JSONL).is_file():
            if sibling.is_file():
                return RunInfo(sibling, _identity(sibling)[0], path, _identity(sibling)[1])
            return _info(path / FINALIZE_JSONL)
        runs = sorted(path.glob("*.jsonl"))
        if runs:
            return _info(_newest(runs))
        raise RunNotFoundError(f"{path} is a directory without a run's JSONL (*.jsonl)")
    root = Path(report_dir or DEFAULT_REPORT_DIR)
    if os.sep not in text and root.is_dir():
        exact = root / f"{text}.jsonl"
        if exact.is_file():
            return _info(exact)
        matches = sorted(root.glob(f"{text}*.jsonl"))
        if len(matches) == 1:
            return _info(matches[0])
        if len(matches) > 1:
            names = ", ".join(m.stem for m in matches[:5])
            raise RunNotFoundError(f"run id {text!r} is ambiguous in {root}: {names}")
    raise RunNotFoundError(
        f"no run {text!r}: not a file, not a directory, and no {text}.jsonl in {root} "
        "(use --report-dir to search elsewhere)"
    )
