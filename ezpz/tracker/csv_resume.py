"""``metrics.csv`` of a resumed run: one row per recorded step, no second header.

:func:`repair` runs once when a run is resumed (rank 0, before the csv
backend opens the file): rows the JSONL does not hold (a step the new
segment supersedes) are cut, and rows the JSONL holds but the csv lost
(queued in the backend when a SIGKILL came) are restored from the JSONL.
:func:`truncate_from_step` is the csv side of the superseding rule during
the run (the backend's ``supersede`` hook).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STEP_COLUMN = "step"


def _rows(data: bytes) -> tuple[int, list[tuple[int, int, int | None]]]:
    """(end of the header, [(start, end, step or None)] of every row) of a GrowingCsv file."""
    newline = data.find(b"\n")
    if newline < 0:
        return len(data), []
    pos = newline + 1
    rows: list[tuple[int, int, int | None]] = []
    size = len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        if end < 0:  # an incomplete last row: GrowingCsv drops it when it continues
            break
        if end > pos:
            first = data[pos:end].split(b",", 1)[0]
            try:
                step: int | None = int(first)
            except ValueError:
                try:
                    value = float(first)
                    step = int(value) if value.is_integer() else None
                except ValueError:
                    step = None
            rows.append((pos, end + 1, step))
        pos = end + 1
    return newline + 1, rows


def truncate_from_step(path: str | os.PathLike[str], step: int) -> int:
    """Cut ``path`` before its first row whose step is ``>= step``; rows removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    _header_end, rows = _rows(data)
    for i, (start, _end, row_step) in enumerate(rows):
        if row_step is not None and row_step >= step:
            os.truncate(path, start)
            return sum(1 for r in rows[i:] if r[2] is not None)
    return 0


def repair(path: str | os.PathLike[str], run: Any) -> tuple[int, int]:
    """Make ``path`` hold one row per kept JSONL record of ``run`` (a ``LoadedRun``).

    The longest prefix of the csv's stepped rows that matches the JSONL's
    steps is kept (step-less rows among them too: StopWatch timings), the
    rest is cut, and the JSONL records after that prefix are appended as the
    csv backend would have written them. Returns (rows added, rows removed).
    """
    import orjson

    from ezpz.history.jsonl import decode_value
    from ezpz.history.keys import STEP_FIELD, TIME_FIELD
    from ezpz.tracker.csv_backend import CSVBackend

    path = Path(path)
    data = path.read_bytes()
    header_end, rows = _rows(data)
    expected = run.steps.tolist()
    matched = 0
    keep_end = header_end
    removed = 0
    for i, (_start, end, step) in enumerate(rows):
        if step is None:
            keep_end = end
            continue
        if matched < len(expected) and step == expected[matched]:
            matched += 1
            keep_end = end
            continue
        removed = sum(1 for r in rows[i:] if r[2] is not None)
        break
    if keep_end < len(data):
        keep_end = max(keep_end, _padding_end(data, header_end))
        os.truncate(path, keep_end)
    if matched >= len(expected):
        return 0, removed
    backend = CSVBackend(outdir=path.parent, rank=0)
    try:
        with open(run.path, "rb") as fh:
            for offset in run.offsets[matched:].tolist():
                fh.seek(offset)
                record = orjson.loads(fh.readline())
                step = record.pop(STEP_FIELD, None)
                record.pop(TIME_FIELD, None)
                values = {}
                for key, value in record.items():
                    decoded = decode_value(value)
                    values[key] = value if decoded is None else decoded
                backend.log(values, step=step)
    finally:
        backend.finish()
    return len(expected) - matched, removed


def _padding_end(data: bytes, header_end: int) -> int:
    """The end of the blank padding lines after the header (rows start there)."""
    pos = header_end
    while pos < len(data) and data[pos : pos + 1] == b"\n":
        pos += 1
    return pos
