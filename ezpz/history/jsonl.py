"""The per-step JSONL log: one strict-JSON object per ``update()`` (rank 0).

Each line is ``{"_step": int, "_time": float, "<key>": value, ...}`` with raw
values, statistics (``<key>/mean`` ...) and vector metrics (lists). JSON has
no NaN or infinity, so those are written as the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"`` and turned back into floats on reading.
Lines go straight to the OS with one ``write`` each: a job killed with
SIGKILL keeps every line it finished.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ezpz.history.keys import EVENT_FIELD, STEP_FIELD, TIME_FIELD

logger = logging.getLogger(__name__)

_NONFINITE_TO_STR = {math.inf: "Infinity", -math.inf: "-Infinity"}
_STR_TO_FLOAT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_isfinite = math.isfinite
_STEP, _TIME = STEP_FIELD.encode(), TIME_FIELD.encode()
# The start of a metric line: step and time, before the record's own keys.
_HEAD = b'{"' + _STEP + b'":%d,"' + _TIME + b'":%b,%b\n'
_HEAD_ONLY = b'{"' + _STEP + b'":%d,"' + _TIME + b'":%b}\n'  # a record with no keys
_dumps = orjson.dumps


def encode_nonfinite(value: float) -> float | str:
    if _isfinite(value):
        return value
    return "NaN" if value != value else _NONFINITE_TO_STR[value]


def decode_value(value: Any) -> float | list[float] | None:
    """A JSON value back to a float (or a list of floats); None if not numeric."""
    if type(value) is float or type(value) is int:
        return float(value)
    if type(value) is str:
        return _STR_TO_FLOAT.get(value)
    if type(value) is bool:
        return float(value)
    if type(value) is list:
        out = [decode_value(v) for v in value]
        return [math.nan if v is None or isinstance(v, list) else v for v in out]
    return None


class JsonlWriter:
    """Appends records to a JSONL file opened once for the whole run."""

    def __init__(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if overwrite else 0)
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, flags, 0o666)  # the umask decides
        except OSError as exc:
            # Rank 0 alone opens it: raising here would leave the other ranks in the
            # constructor's next collective. Training goes on, as when a write fails.
            logger.error("ezpz: cannot open the JSONL %s (%s); no JSONL for this run", path, exc)

    def write(self, step: int, time: float, record: dict[str, Any]) -> None:
        """Write one line for ``record`` (floats, ints, lists of floats)."""
        if self._fd is None:
            return
        try:
            # History's records hold Python floats, ints and lists: no numpy option.
            body = _dumps(record)
        except TypeError:  # a numpy value, or an int beyond 64 bits (as the float64 kept)
            record = _plain_record(record)
            body = _dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)
        # orjson writes NaN/inf as null, and ezpz records hold no None: a null
        # means a non-finite value, which gets its string encoding (rare path).
        # A finite sum of the values (floats and ints only) rules that out
        # without scanning the line.
        try:
            clean = _isfinite(sum(record.values()))
        except (TypeError, OverflowError):  # lists (vectors), huge ints
            clean = False
        if not clean and b"null" in body:
            body = _dumps(_encode_nonfinite_record(record), option=orjson.OPT_SERIALIZE_NUMPY)
        # orjson's float text round-trips like repr() and is made 5x faster.
        if len(body) > 2:
            line = _HEAD % (step, _dumps(time), body[1:])
        else:
            line = _HEAD_ONLY % (step, _dumps(time))
        try:
            os.write(self._fd, line)
        except OSError as exc:  # disk full, quota: keep training, say so once
            logger.error("ezpz: JSONL write to %s failed (%s); stopping JSONL", self.path, exc)
            self.close()

    def write_event(self, event: str, time: float, **fields: Any) -> None:
        """One lifecycle line ``{"_event": event, "_time": time, ...}`` (not a metric row)."""
        if self._fd is None:
            return
        body = {EVENT_FIELD: event, TIME_FIELD: time, **fields}
        line = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=str) + b"\n"
        try:
            os.write(self._fd, line)
        except OSError as exc:
            logger.error("ezpz: JSONL write to %s failed (%s); stopping JSONL", self.path, exc)
            self.close()

    def sync(self) -> None:
        """fsync the file: every line written so far survives a crash of the node."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                logger.warning("ezpz: fsync of %s failed: %s", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _plain_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with Python ints as float64 (±inf beyond float64's range)."""
    from ezpz.history.normalize import _int_as_float

    def plain(v: Any) -> Any:
        if type(v) is int:
            return _int_as_float(v)
        if type(v) is list:
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in record.items()}


def _encode_nonfinite_record(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (encode_nonfinite(v) if type(v) is float else _encode_list(v)) for k, v in record.items()
    }


def _encode_list(value: Any) -> Any:
    if type(value) is list:
        return [encode_nonfinite(v) if type(v) is float else v for v in value]
    return value


def read_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the metric records (lifecycle events skipped); torn lines skipped with a warning."""
    for record in read_lines(path):
        if EVENT_FIELD not in record:
            yield record


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lifecycle events (``start``, ``interrupted``, ``finalized``) of a JSONL log, in order."""
    return [record for record in read_lines(path) if EVENT_FIELD in record]


def read_lines(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every JSON object of the file in order: metric records and events."""
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                logger.warning("ezpz: %s:%d is not valid JSON (torn write?); skipped", path, lineno)
                continue
            if isinstance(record, dict):
                yield record
