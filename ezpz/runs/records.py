"""Line-level reading of an ezpz JSONL: metric rows, ``_event`` lines, torn lines.

A History writes one strict-JSON object per line: metric rows
``{"_step": int, "_time": float, "<key>": value, ...}`` and lifecycle events
``{"_event": "start" | "interrupted" | "finalized", "_time": ...}``. A line
without its trailing newline is still being written (or was torn by a kill):
readers here never use it, so reading a live file twice never sees half a row.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ezpz.history.keys import STEP_FIELD, TIME_FIELD

try:  # H3 adds EVENT_FIELD; the literal is the agreed name either way
    from ezpz.history.keys import EVENT_FIELD
except ImportError:  # pragma: no cover - older keys.py
    EVENT_FIELD = "_event"

#: The lifecycle states a run's events can put it in (see :func:`run_state`).
RUNNING, INTERRUPTED, FINISHED = "running", "interrupted", "finished"

_STR_TO_FLOAT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_READ_BLOCK = 1 << 20


class NotAnEzpzLogError(ValueError):
    """The file is not an ezpz JSONL log (no line has ``_step`` or ``_event``)."""


@dataclass
class Line:
    """One complete line: its byte ``offset``, the ``end`` offset after its newline."""

    offset: int
    end: int
    record: dict[str, Any] | None  # None: not a JSON object (skipped)

    @property
    def is_event(self) -> bool:
        return self.record is not None and EVENT_FIELD in self.record

    @property
    def is_row(self) -> bool:
        return (
            self.record is not None
            and EVENT_FIELD not in self.record
            and type(self.record.get(STEP_FIELD)) is int
        )


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """A JSON object from one line, or None (blank, invalid or not an object)."""
    if not raw.strip():
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def to_float(value: Any) -> float | None:
    """A scalar JSONL value as a float (``"NaN"``/``"Infinity"`` decoded); None otherwise."""
    kind = type(value)
    if kind is float or kind is int or kind is bool:
        return float(value)
    if kind is str:
        return _STR_TO_FLOAT.get(value)
    return None


def scalar_items(record: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The scalar metrics of a row (``_step``/``_time`` and vector metrics left out)."""
    for key, value in record.items():
        if key.startswith("_") and key in (STEP_FIELD, TIME_FIELD, EVENT_FIELD):
            continue
        number = to_float(value)
        if number is not None:
            yield key, number


def iter_lines(
    path: str | os.PathLike[str], start: int = 0, stop: int | None = None
) -> Iterator[Line]:
    """Every complete line of ``path`` from byte ``start`` (a line start) up to ``stop``.

    A last line without a newline (torn, or still being written) is not
    yielded: the caller can resume at the last yielded ``end`` later.
    """
    with open(path, "rb") as fh:
        fh.seek(start)
        offset = start
        carry = b""
        while True:
            want = _READ_BLOCK if stop is None else min(_READ_BLOCK, stop - offset - len(carry))
            if want <= 0:
                break
            block = fh.read(want)
            if not block:
                break
            data = carry + block
            pos = 0
            while True:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    break
                raw = data[pos : nl + 1]
                yield Line(offset, offset + len(raw), parse_line(raw))
                offset += len(raw)
                pos = nl + 1
            carry = data[pos:]


@dataclass
class RunLog:
    """Everything in one pass over a JSONL (for compare and sync's planning)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # complete lines that were not JSON objects
    torn_tail: bool = False  # the file ends without a newline


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The ``_event`` lines of ``path``, in order."""
    return [ln.record for ln in iter_lines(path) if ln.is_event]  # type: ignore[misc]


def read_log(path: str | os.PathLike[str]) -> RunLog:
    """Rows and events of ``path``; raises :class:`NotAnEzpzLogError` for foreign files."""
    log = RunLog()
    end = 0
    for line in iter_lines(path):
        end = line.end
        if line.is_event:
            log.events.append(line.record)  # type: ignore[arg-type]
        elif line.is_row:
            log.rows.append(line.record)  # type: ignore[arg-type]
        else:
            log.skipped += 1
    log.torn_tail = os.path.getsize(path) > end
    check_ezpz_log(path, log.rows, log.events, log.skipped)
    return log


def check_ezpz_log(
    path: str | os.PathLike[str], rows: list[Any], events: list[Any], skipped: int
) -> None:
    """Raise a clear error for an empty file or one that is not an ezpz log."""
    if rows or events:
        return
    size = os.path.getsize(path)
    if size == 0:
        raise NotAnEzpzLogError(f"{path} is empty: no metrics were logged yet")
    if skipped:
        raise NotAnEzpzLogError(
            f"{path} is not an ezpz JSONL log: none of its {skipped} lines has "
            f"{STEP_FIELD!r} or {EVENT_FIELD!r}"
        )
    raise NotAnEzpzLogError(f"{path} holds no complete line yet")


def start_event(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first ``start`` event (the run's identity and config), if any."""
    for event in events:
        if event.get(EVENT_FIELD) == "start":
            return event
    return None


def run_state(events: list[dict[str, Any]]) -> str | None:
    """``finished``/``interrupted``/``running`` from the last lifecycle event; None if none."""
    for event in reversed(events):
        kind = event.get(EVENT_FIELD)
        if kind in ("finalized", "finished"):
            return FINISHED
        if kind == "interrupted":
            return INTERRUPTED
        if kind == "start":
            return RUNNING
    return None


def read_head(path: str | os.PathLike[str], limit: int = 1 << 16) -> list[Line]:
    """The complete lines within the first ``limit`` bytes (for the start event)."""
    return list(iter_lines(path, 0, limit))


def file_id(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(device, inode): changes when the file is replaced or rotated."""
    st = Path(path).stat()
    return st.st_dev, st.st_ino
