"""Continue a run across job restarts: ``History(resume=...)`` / ``EZPZ_RESUME``.

What ``resume`` means (see docs/restarts.md):

* ``None``/``False`` (default): a new run, as always.
* ``"auto"`` (or ``True``): the newest run in ``report_dir`` whose JSONL does
  not end with a ``finalized`` event; a new run when there is none, so a job
  script can always pass it.
* a run id: ``{report_dir}/{run_id}.jsonl``.
* a path to a run's JSONL.

Rank 0 decides and broadcasts, so every rank agrees (an error is raised on
every rank). The recorded history is reloaded from the JSONL with
:func:`load_run` (every group, raw values, statistics, vectors), and the
**superseding rule** applies between segments: when a resumed run's first
update has a step that was already recorded (the job restarted from a
checkpoint older than the last logged step), every group drops its rows
from the first row with that step or a later one, and the new values take
their place. The outputs then hold each step once, from the newest segment.

This module knows nothing of ``History``: it works on the store, paths and
the communicator it is handed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ezpz._env import FALSY, TRUTHY, env_str
from ezpz.history.keys import EVENT_FIELD, STEP_FIELD, TIME_FIELD, group_of

logger = logging.getLogger(__name__)

RESUME_ENV = "EZPZ_RESUME"
RUN_NAME_ENV = "EZPZ_RUN_NAME"
AUTO = "auto"
START, INTERRUPTED, FINALIZED = "start", "interrupted", "finalized"
_FALSY = FALSY | {"", "none"}
_TRUTHY = TRUTHY | {AUTO}
_CHUNK_ROWS = 8192
_STEP_TIME = (STEP_FIELD, TIME_FIELD)
_TAIL_BYTES = 1 << 16


class ResumeError(ValueError):
    """A ``resume=`` target that does not exist or cannot be read."""


# -- what to resume ----------------------------------------------------------------
def resume_wanted(resume: bool | str | os.PathLike[str] | None) -> str | None:
    """Normalise ``resume=`` (else ``EZPZ_RESUME``): None, ``"auto"``, or a run id / path."""
    if resume is None:
        resume = env_str(RESUME_ENV, "")
    if resume is False:
        return None
    if resume is True:
        return AUTO
    text = os.fspath(resume).strip()
    if text.lower() in _FALSY:
        return None
    if text.lower() in _TRUTHY:
        return AUTO
    return text


def run_name_wanted(run_name: str | None) -> str | None:
    """``run_name=`` else ``EZPZ_RUN_NAME`` (stripped; None when empty)."""
    if run_name is None:
        run_name = env_str(RUN_NAME_ENV, "")
    run_name = str(run_name).strip()
    return run_name or None


def job_id() -> str | None:
    """The scheduler's job id (``SLURM_JOB_ID``, else ``PBS_JOBID``), if any."""
    for name in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "COBALT_JOBID"):
        value = env_str(name, "")
        if value:
            return value
    return None


@dataclass(frozen=True)
class RunFile:
    """One run's JSONL found in ``report_dir``."""

    path: Path
    run_id: str
    finalized: bool
    mtime: float


def _last_line(path: Path) -> dict[str, Any] | None:
    """The last complete JSON object of ``path`` (reads only the file's tail)."""
    import orjson

    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - _TAIL_BYTES))
        tail = fh.read()
    for line in reversed(tail.splitlines()):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line
        return obj if isinstance(obj, dict) else None
    return None


def _first_line(path: Path) -> dict[str, Any] | None:
    import orjson

    with open(path, "rb") as fh:
        line = fh.readline(1 << 20)
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def find_runs(report_dir: str | os.PathLike[str]) -> list[RunFile]:
    """The runs in ``report_dir``, newest first: ``<run_id>.jsonl`` files that begin
    with the ``start`` event of that run id (copies and links are not runs)."""
    folder = Path(report_dir)
    runs: list[RunFile] = []
    if not folder.is_dir():
        return runs
    for path in folder.glob("*.jsonl"):
        try:
            if path.is_symlink() or not path.is_file():
                continue
            first = _first_line(path)
            if not first or first.get(EVENT_FIELD) != START:
                continue
            if str(first.get("run_id") or "") != path.stem:
                continue  # a copy (finalize's metrics.jsonl), not the run's own log
            last = _last_line(path)
            finalized = last is not None and last.get(EVENT_FIELD) == FINALIZED
            runs.append(
                RunFile(
                    path, str(first.get("run_id") or path.stem), finalized, path.stat().st_mtime
                )
            )
        except OSError:
            continue
    runs.sort(key=lambda r: (r.mtime, r.run_id), reverse=True)
    return runs


def _describe(report_dir: Path, runs: Sequence[RunFile]) -> str:
    if not runs:
        return f"no runs in report_dir={str(report_dir)!r}"
    listed = ", ".join(f"{r.run_id}{' (finalized)' if r.finalized else ''}" for r in runs[:20])
    more = f" and {len(runs) - 20} more" if len(runs) > 20 else ""
    return f"runs in report_dir={str(report_dir)!r}: {listed}{more}"


def choose(
    wanted: str, report_dir: str | os.PathLike[str], jsonl_path: str | os.PathLike[str] | None
) -> tuple[str, Path] | None:
    """The (run_id, JSONL path) to continue, or None for a new run (rank 0 only)."""
    folder = Path(report_dir)
    if wanted == AUTO:
        if jsonl_path is not None:  # an explicit file: continue it unless it was finalized
            path = Path(jsonl_path)
            if path.is_file() and path.stat().st_size:
                last = _last_line(path)
                if not (last and last.get(EVENT_FIELD) == FINALIZED):
                    first = _first_line(path) or {}
                    return str(first.get("run_id") or path.stem), path
            return None
        for run in find_runs(folder):
            if not run.finalized:
                return run.run_id, run.path
        return None
    # A path to a JSONL, or a run id in report_dir.
    candidate = Path(wanted).expanduser()
    if candidate.suffix == ".jsonl" or os.sep in wanted or candidate.is_file():
        if not candidate.is_file():
            raise ResumeError(
                f"resume={wanted!r}: no such JSONL file; {_describe(folder, find_runs(folder))}"
            )
        first = _first_line(candidate) or {}
        return str(first.get("run_id") or candidate.stem), candidate
    path = folder / f"{wanted}.jsonl"
    if path.is_file():
        return wanted, path
    for run in find_runs(folder):
        if run.run_id == wanted:
            return run.run_id, run.path
    raise ResumeError(
        f"resume={wanted!r}: no run with that id; {_describe(folder, find_runs(folder))}"
    )


def decide(
    resume: bool | str | os.PathLike[str] | None,
    report_dir: str | os.PathLike[str],
    jsonl_path: str | os.PathLike[str] | None,
    comm: Any | None,
    rank: int,
) -> tuple[str, Path] | None:
    """:func:`choose` on rank 0, broadcast to every rank of ``comm`` (errors raise everywhere)."""
    wanted = resume_wanted(resume)
    outcome: tuple[str, Any] = ("none", None)
    if rank == 0 and wanted is not None:
        try:
            chosen = choose(wanted, report_dir, jsonl_path)
            outcome = ("run", (chosen[0], str(chosen[1]))) if chosen else ("none", None)
        except ResumeError as exc:
            outcome = ("error", str(exc))
    if comm is not None:
        outcome = comm.bcast(outcome, root=0)
    kind, value = outcome
    if kind == "error":
        raise ResumeError(value)
    if kind == "run":
        return value[0], Path(value[1])
    return None


# -- reading a run back ----------------------------------------------------------
@dataclass
class GroupRows:
    """One group's rows of a run: columns in pieces that share a layout."""

    pieces: list[tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=list
    )  # (names, steps int64, times float64, values [rows, len(names)])
    vectors: list[tuple[int, str, np.ndarray]] = field(default_factory=list)  # (row, name, values)
    rows: int = 0

    def add(
        self, names: tuple[str, ...], steps: np.ndarray, times: np.ndarray, values: np.ndarray
    ) -> int:
        self.pieces.append((names, steps, times, values))
        start = self.rows
        self.rows += len(steps)
        return start

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows."""
        kept: list[tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]] = []
        seen = 0
        for names, steps, times, values in self.pieces:
            if seen >= n:
                break
            take = min(len(steps), n - seen)
            kept.append((names, steps[:take], times[:take], values[:take]))
            seen += take
        self.pieces = kept
        self.rows = seen
        self.vectors = [v for v in self.vectors if v[0] < n]

    def first_row_at_or_after(self, step: int) -> int | None:
        seen = 0
        for _names, steps, _times, _values in self.pieces:
            hits = np.flatnonzero(steps >= step)
            if len(hits):
                return seen + int(hits[0])
            seen += len(steps)
        return None


@dataclass
class LoadedRun:
    """A run read back from its JSONL (after the superseding rule between segments)."""

    path: Path
    run_id: str
    groups: dict[str, GroupRows]
    events: list[dict[str, Any]]
    records: int  # metric lines kept
    last_step: int | None
    config: dict[str, Any] | None  # from the last start event that has one
    world_size: int | None
    torn_tail: int  # bytes of a torn last line (0 when the file ends cleanly)
    steps: np.ndarray  # the step of each kept record, in order (for the csv)
    offsets: np.ndarray  # the byte offset of each kept record's line (for the csv)


class _Splitter:
    """How one record key set maps onto groups (cached per key set)."""

    __slots__ = ("plan",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        names = set(keys)
        by_group: dict[str, tuple[list[str], list[int]]] = {}
        for i, key in enumerate(keys):
            group, name = group_of(key, names)
            gnames, idx = by_group.setdefault(group, ([], []))
            gnames.append(name)
            idx.append(i)
        self.plan = [(g, tuple(n), np.asarray(i, dtype=np.intp)) for g, (n, i) in by_group.items()]


def _decode(value: Any) -> float | list[float] | None:
    from ezpz.history.jsonl import decode_value

    return decode_value(value)


class _Loader:
    """Builds the groups' row pieces from records, a chunk of same-key records at a time."""

    def __init__(self, first_step: int = 0) -> None:
        self.first_step = first_step
        self.groups: dict[str, GroupRows] = {}
        self.splitters: dict[tuple[str, ...], _Splitter] = {}
        self.key: tuple[str, ...] | None = None  # the full key tuple of the buffered records
        self.flat: list[Any] = []  # their values, one after another (_step and _time first)
        self.count = 0  # records buffered
        self.steps: list[int] = []  # every kept record's step
        self.offsets: list[int] = []  # every kept record's line offset
        self.max_step: int | None = None

    def group(self, name: str) -> GroupRows:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = GroupRows()
        return g

    def add(self, record: dict[str, Any], offset: int) -> None:
        key = tuple(record)
        if key != self.key:
            if key[:2] != _STEP_TIME:  # a record without _step/_time first: put them there
                step = record.pop(STEP_FIELD, None)
                when = record.pop(TIME_FIELD, math.nan)
                if step is None:
                    step = self.first_step + len(self.steps) + self.count
                record = {STEP_FIELD: int(step), TIME_FIELD: when, **record}
                key = tuple(record)
            if key != self.key:
                self.flush()
                self.key = key
        if self.count >= _CHUNK_ROWS:
            self.flush()
        self.flat.extend(record.values())
        self.count += 1
        self.offsets.append(offset)

    def flush(self) -> None:
        flat, key, n = self.flat, self.key, self.count
        if not n or key is None:
            return
        self.flat, self.count = [], 0
        width = len(key)
        steps_list = [int(s) for s in flat[0::width]]
        self.steps.extend(steps_list)
        top = max(steps_list)
        self.max_step = top if self.max_step is None else max(self.max_step, top)
        splitter = self.splitters.get(key)
        if splitter is None:
            splitter = self.splitters[key] = _Splitter(key[2:])
        steps = np.asarray(steps_list, dtype=np.int64)
        values: np.ndarray | None
        try:  # the common case: numbers (and "NaN"/"Infinity" strings, which float() reads)
            values = np.array(flat, dtype=np.float64).reshape(n, width)
        except (TypeError, ValueError):  # vectors (lists), a null time, other strings
            values = None
        if values is not None:
            times = values[:, 1]
            for gname, names, idx in splitter.plan:
                self.group(gname).add(names, steps, times, values[:, idx + 2])
        else:
            rows = [flat[i * width : (i + 1) * width] for i in range(n)]
            times = np.asarray(
                [t if isinstance(t, (int, float)) else math.nan for t in (r[1] for r in rows)],
                dtype=np.float64,
            )
            self._flush_slow(splitter, steps, times, [r[2:] for r in rows])

    def _flush_slow(
        self,
        splitter: _Splitter,
        steps: np.ndarray,
        times: np.ndarray,
        buf_values: list[list[Any]],
    ) -> None:
        """Records holding strings (NaN, Infinity) or lists (vectors): one value at a time."""
        for gname, names, idx in splitter.plan:
            g = self.group(gname)
            scalar_cols: list[int] = []
            rows = np.full((len(steps), len(names)), np.nan)
            vector_cells: list[tuple[int, str, np.ndarray]] = []
            for r, raw in enumerate(buf_values):
                for j, i in enumerate(idx):
                    value = _decode(raw[i])
                    if isinstance(value, list):
                        vector_cells.append((r, names[j], np.asarray(value, dtype=np.float64)))
                    elif value is not None:
                        rows[r, j] = value
                        scalar_cols.append(j)
            keep = sorted(set(scalar_cols))
            is_vector = {name for _r, name, _v in vector_cells}
            keep = [j for j in keep if names[j] not in is_vector]
            start = g.add(tuple(names[j] for j in keep), steps, times, rows[:, keep])
            g.vectors.extend((start + r, name, arr) for r, name, arr in vector_cells)

    def supersede(self, step: int) -> None:
        """A new segment starts at ``step``: drop every group's rows from that step on."""
        self.flush()
        if self.max_step is None or step > self.max_step:
            return
        for g in self.groups.values():
            row = g.first_row_at_or_after(step)
            if row is not None:
                g.truncate(row)
        steps = np.asarray(self.steps, dtype=np.int64)
        hits = np.flatnonzero(steps >= step)
        if len(hits):
            cut = int(hits[0])
            del self.steps[cut:]
            del self.offsets[cut:]
        self.max_step = max(self.steps) if self.steps else None


def has_segments(path: str | os.PathLike[str]) -> bool:
    """True when the JSONL holds a resumed segment (a ``start`` event with ``resumed``)."""
    with open(path, "rb") as fh:
        return any(b'"resumed":true' in line and b'"_event"' in line for line in fh)


def load_run(path: str | os.PathLike[str], *, first_step: int = 0) -> LoadedRun:
    """Read a run's JSONL: every record of every segment, events, config.

    Torn lines are skipped with a warning (a torn *last* line is reported in
    ``torn_tail`` so that the caller can cut it before appending).
    """
    import orjson

    path = Path(path)
    loader = _Loader(first_step)
    events: list[dict[str, Any]] = []
    config: dict[str, Any] | None = None
    world_size: int | None = None
    pending_segment = False
    torn_tail = 0
    with open(path, "rb") as fh:
        data = fh.read()
    # Lines as zero-copy slices of one buffer (orjson reads memoryviews).
    view = memoryview(data)
    size = len(data)
    find = data.find
    loads, decode_error, add = orjson.loads, orjson.JSONDecodeError, loader.add
    lineno = 0
    end = -1
    while end < size:
        start = end + 1
        end = find(b"\n", start)
        if end < 0:
            end = size
        lineno += 1
        if end == start:
            continue
        try:
            obj = loads(view[start:end])
        except decode_error:
            line = data[start:end]
            if not line.strip():
                continue
            if end == size:
                torn_tail = len(line)
                logger.warning(
                    "ezpz: %s ends in a torn line (%d bytes, a killed write); skipped",
                    path,
                    len(line),
                )
            else:
                logger.warning("ezpz: %s:%d is not valid JSON (torn write?); skipped", path, lineno)
            continue
        if type(obj) is not dict:
            continue
        if EVENT_FIELD in obj:
            event = obj[EVENT_FIELD]
            events.append(obj)
            if event == START:
                if obj.get("config") is not None:
                    config = obj.get("config")
                if obj.get("world_size") is not None:
                    world_size = int(obj["world_size"])
                pending_segment = bool(obj.get("resumed"))
            continue
        if pending_segment:
            pending_segment = False
            step = obj.get(STEP_FIELD)
            if step is not None:
                loader.supersede(int(step))
        add(obj, start)
    loader.flush()
    first_start = next((e for e in events if e.get(EVENT_FIELD) == START), {})
    return LoadedRun(
        path=path,
        run_id=str(first_start.get("run_id") or path.stem),
        groups=loader.groups,
        events=events,
        records=len(loader.steps),
        last_step=loader.max_step,
        config=config,
        world_size=world_size,
        torn_tail=torn_tail,
        steps=np.asarray(loader.steps, dtype=np.int64),
        offsets=np.asarray(loader.offsets, dtype=np.int64),
    )


def cut_torn_tail(path: str | os.PathLike[str]) -> int:
    """Remove a torn last line, so appended lines start on a line of their own."""
    path = Path(path)
    size = path.stat().st_size
    if not size:
        return 0
    with open(path, "rb") as fh:
        fh.seek(max(0, size - _TAIL_BYTES))
        tail = fh.read()
    if tail.endswith(b"\n"):
        return 0
    cut = tail.rfind(b"\n")
    keep = size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= _TAIL_BYTES else size)
    if keep == size:
        return 0
    os.truncate(path, keep)
    return size - keep


# -- the store of a resumed History ------------------------------------------------
def portable(run: LoadedRun) -> dict[str, Any]:
    """The parts of ``run`` other ranks need, as plain data for ``comm.bcast``."""
    return {
        "groups": {name: (g.pieces, g.vectors, g.rows) for name, g in run.groups.items()},
        "records": run.records,
        "last_step": run.last_step,
    }


def fill_store(store: Any, groups: Mapping[str, Any]) -> None:
    """Append the loaded rows (``LoadedRun.groups`` or :func:`portable`'s) to ``store``."""
    for name, entry in groups.items():
        if isinstance(entry, GroupRows):
            pieces, vectors = entry.pieces, entry.vectors
        else:
            pieces, vectors, _rows = entry
        g = store.group(name)
        base = len(g)
        extend = getattr(g, "extend", None)
        for names, steps, times, values in pieces:
            if extend is not None:  # bulk: block-wise column writes
                extend(names, steps, times, values)
                continue
            for step, when, row in zip(
                steps.tolist(), times.tolist(), values.tolist(), strict=True
            ):
                g.append(names, row, step, when)
        for row, vname, arr in vectors:
            g.append_vector(vname, base + row, arr)


def truncate_store(store: Any, step: int) -> dict[str, int]:
    """Drop every group's rows from the first row with a step ``>= step``; group -> rows kept."""
    kept: dict[str, int] = {}
    for name, g in store.groups.items():
        steps = g.steps
        hits = np.flatnonzero(steps >= step)
        if len(hits):
            g.truncate(int(hits[0]))
            kept[name] = int(hits[0])
    return kept


class Supersede:
    """The superseding rule, live: checked at the first update of a resumed run."""

    __slots__ = ("last_step", "armed")

    def __init__(self, last_step: int | None) -> None:
        self.last_step = last_step
        self.armed = last_step is not None

    def check(self, step: int) -> bool:
        """True (once) when ``step`` was already recorded: the caller truncates."""
        self.armed = False
        return self.last_step is not None and step <= self.last_step


def config_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """Dot-joined keys whose values differ between two configs (either side missing counts)."""
    if old is None or new is None:
        return []

    def flat(node: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
        if isinstance(node, Mapping):
            for k, v in node.items():
                flat(v, f"{prefix}.{k}" if prefix else str(k), out)
        else:
            out[prefix] = node
        return out

    a = flat(json.loads(json.dumps(old, default=str)), "", {})
    b = flat(json.loads(json.dumps(new, default=str)), "", {})
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


# -- segments for the report -------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One job's part of a run."""

    job_id: str | None
    start: float
    end: float | None
    ended: str  # "finalized", "interrupted (SIGTERM)", "killed or crashed", "running"
    first_step: int | None = None
    last_step: int | None = None
    world_size: int | None = None


def segments(
    path: str | os.PathLike[str],
    *,
    open_label: str = "running, killed or crashed",
    open_end: float | None = None,
) -> list[Segment]:
    """The segments of a run, from its start/interrupted/finalized events and record times.

    A segment whose job wrote no ``interrupted``/``finalized`` event and was
    followed by another start was killed (SIGKILL, node failure) or crashed.
    The last segment, when still open, gets ``open_label`` (finalize passes
    ``"finalized"``) and ends at ``open_end`` (else its last record).
    """
    import orjson

    out: list[Segment] = []
    current: dict[str, Any] | None = None

    def close(ended: str, end: float | None) -> None:
        nonlocal current
        if current is not None:
            out.append(
                Segment(
                    job_id=current["job_id"],
                    start=current["start"],
                    end=end if end is not None else current["last_time"],
                    ended=ended,
                    first_step=current["first_step"],
                    last_step=current["last_step"],
                    world_size=current["world_size"],
                )
            )
        current = None

    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            event = obj.get(EVENT_FIELD)
            when = obj.get(TIME_FIELD)
            if event == START:
                if current is not None:
                    close("killed or crashed", None)
                current = {
                    "job_id": obj.get("job_id"),
                    "start": when,
                    "last_time": when,
                    "first_step": None,
                    "last_step": None,
                    "world_size": obj.get("world_size"),
                }
            elif event == INTERRUPTED:
                if current is not None:
                    signal = obj.get("signal")
                    close(f"interrupted ({signal})" if signal else "interrupted", when)
            elif event == FINALIZED:
                if current is not None:
                    close("finalized", when)
            elif event is None:
                if current is None:  # records before any start event (an older ezpz)
                    current = {
                        "job_id": None,
                        "start": when,
                        "last_time": when,
                        "first_step": None,
                        "last_step": None,
                        "world_size": None,
                    }
                step = obj.get(STEP_FIELD)
                if current["first_step"] is None:
                    current["first_step"] = step
                current["last_step"] = step
                current["last_time"] = when
    if current is not None:
        close(open_label, open_end)
    return out


def segments_markdown(segs: Iterable[Segment]) -> str:
    """A markdown table of the segments (empty string for a one-segment run that ended cleanly)."""
    segs = list(segs)
    if not segs:
        return ""

    def when(t: float | None) -> str:
        if t is None or not isinstance(t, (int, float)) or not math.isfinite(t):
            return "-"
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    lines = [
        "| # | job id | start | end | steps | ranks | ended |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(segs, 1):
        steps = "-" if s.first_step is None else f"{s.first_step}–{s.last_step}"
        lines.append(
            f"| {i} | {s.job_id or '-'} | {when(s.start)} | {when(s.end)} | {steps} | "
            f"{s.world_size or '-'} | {s.ended} |"
        )
    return "\n".join(lines) + "\n"


_RUN_ID_RE = re.compile(r"^\d{4}-\d{2}-\d{2}-\d{6}-[0-9a-f]{6}$")


def looks_like_run_id(text: str) -> bool:
    """True for ids History generates (``2026-11-30-201500-a1b2c3``)."""
    return bool(_RUN_ID_RE.match(text))
