"""Follow the end of a growing JSONL with bounded reads.

:class:`TailReader` keeps the last ``keep`` metric rows of a file. Its first
read starts at the end and walks backwards block by block until it has
``keep`` rows (or has read ``max_initial_bytes``), plus one small read of the
head for the ``start`` event; later reads take only the bytes appended since.
A 10 GB JSONL therefore costs a few MiB per frame, not 10 GB.

A last line without its newline (torn by a kill, or half-written right now)
is left for the next read. A file that is replaced or rotated (another inode,
or shorter than what was read) is read again from its end.
``bytes_read`` / ``last_read_bytes`` count every byte read, for tests and
benchmarks.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ezpz.runs.records import EVENT_FIELD, STEP_FIELD, parse_line

DEFAULT_BLOCK = 1 << 18  # 256 KiB per backward read
DEFAULT_MAX_INITIAL = 64 << 20  # never read more than this for one frame
HEAD_BYTES = 1 << 16  # where the start event is looked for


class TailReader:
    """The last ``keep`` rows (and the lifecycle events) of a JSONL file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        keep: int = 1000,
        *,
        block: int = DEFAULT_BLOCK,
        max_initial_bytes: int = DEFAULT_MAX_INITIAL,
    ) -> None:
        self.path = Path(path)
        self.keep = max(1, int(keep))
        self.block = int(block)
        self.max_initial_bytes = int(max_initial_bytes)
        self.rows: deque[dict[str, Any]] = deque(maxlen=self.keep)
        #: the last raw JSON value of every key over all rows read (first-seen order)
        self.latest: dict[str, Any] = {}
        self.head_events: list[dict[str, Any]] = []  # events in the first HEAD_BYTES
        self.tail_events: list[dict[str, Any]] = []  # events seen since the tail window began
        self.offset = 0  # end of the last complete line consumed
        self.size = 0
        self.bytes_read = 0
        self.last_read_bytes = 0
        self.resets = 0  # how often the file was replaced, rotated or truncated
        self.skipped = 0  # complete lines that were not JSON objects
        self._id: tuple[int, int] | None = None

    # -- public -----------------------------------------------------------
    @property
    def events(self) -> list[dict[str, Any]]:
        """Lifecycle events known: the head's, then those in the tail window."""
        seen = {id(e) for e in self.head_events}
        return self.head_events + [e for e in self.tail_events if id(e) not in seen]

    def poll(self) -> bool:
        """Read what is new. True when rows or events changed. Raises OSError if the file is gone."""
        self.last_read_bytes = 0
        st = os.stat(self.path)
        ident = (st.st_dev, st.st_ino)
        if self._id is None or ident != self._id or st.st_size < self.offset:
            if self._id is not None:
                self.resets += 1
            self._id = ident
            self._initial(st.st_size)
            return True
        self.size = st.st_size
        if st.st_size == self.offset:
            return False
        if st.st_size - self.offset > self.max_initial_bytes:
            # Fell far behind (or a huge burst): jump to the end as a first read would.
            self._initial(st.st_size)
            return True
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = self._read(fh, st.st_size - self.offset)
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            return False
        self._consume(data[:cut].split(b"\n")[:-1])
        self.offset += cut
        return True

    # -- internals --------------------------------------------------------
    def _read(self, fh: Any, n: int) -> bytes:
        data = fh.read(n)
        self.bytes_read += len(data)
        self.last_read_bytes += len(data)
        return data

    def _consume(self, lines: Iterable[bytes]) -> None:
        for raw in lines:
            record = parse_line(raw)
            if record is None:
                if raw.strip():
                    self.skipped += 1
                continue
            if EVENT_FIELD in record:
                self.tail_events.append(record)
            elif type(record.get(STEP_FIELD)) is int:
                self.rows.append(record)
                self.latest.update(record)
            else:
                self.skipped += 1

    def _initial(self, size: int) -> None:
        self.rows.clear()
        self.latest = {}
        self.head_events = []
        self.tail_events = []
        self.size = size
        with open(self.path, "rb") as fh:
            head = self._read(fh, min(size, HEAD_BYTES))
            for raw in head[: head.rfind(b"\n") + 1].split(b"\n"):
                record = parse_line(raw)
                if record is not None and EVENT_FIELD in record:
                    self.head_events.append(record)
            # Walk back from the end to the last newline, then block by block.
            end = size
            chunks: list[bytes] = []
            pos = end
            lines_seen = 0
            budget = self.max_initial_bytes
            last_nl: int | None = None
            while pos > 0 and budget > 0:
                n = min(self.block, pos, budget)
                pos -= n
                fh.seek(pos)
                chunk = self._read(fh, n)
                budget -= n
                chunks.append(chunk)
                if last_nl is None:
                    idx = chunk.rfind(b"\n")
                    if idx >= 0:
                        last_nl = pos + idx + 1
                lines_seen += chunk.count(b"\n")
                if lines_seen > self.keep + 1:
                    break
            data = b"".join(reversed(chunks))
        if last_nl is None:  # no complete line yet
            self.offset = 0 if pos == 0 else size
            return
        data = data[: last_nl - pos]
        lines = data.split(b"\n")[:-1]
        if pos > 0:
            lines = lines[1:]  # the first piece may start mid-line
        self._consume(lines)
        self.offset = last_nl
        head_ids = {_event_key(e) for e in self.head_events}
        self.tail_events = [e for e in self.tail_events if _event_key(e) not in head_ids]


def _event_key(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event.get(EVENT_FIELD), event.get("_time"))
