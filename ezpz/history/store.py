"""Columnar float64 storage of recorded metrics, one table per group.

Each group (``train``, ``eval``, the unprefixed ``""``) has its own row
("draw") axis. ``update()`` appends one row per group it touches. Rows are
buffered as short Python lists while the key layout stays the same and
moved into fixed-size float64 blocks in bulk, so the hot path is one list
append and memory per stored value stays near 8 bytes (blocks never need
the copy-and-double of a growing array).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

BLOCK_ROWS = 8192  # rows per storage block
PENDING_ROWS = 256  # rows buffered as Python lists before a bulk move


class _Column:
    """A float64 column stored as fixed-size blocks (NaN where unlogged)."""

    __slots__ = ("blocks",)

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def ensure(self, nblocks: int) -> None:
        while len(self.blocks) < nblocks:
            self.blocks.append(np.full(BLOCK_ROWS, np.nan))

    def write(self, start: int, values: np.ndarray) -> None:
        pos = 0
        while pos < len(values):
            b, off = divmod(start + pos, BLOCK_ROWS)
            take = min(BLOCK_ROWS - off, len(values) - pos)
            self.blocks[b][off : off + take] = values[pos : pos + take]
            pos += take

    def read_slice(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` copied out of the blocks that hold them."""
        out = np.full(max(stop - start, 0), np.nan)
        pos = start
        while pos < stop:
            b, off = divmod(pos, BLOCK_ROWS)
            take = min(BLOCK_ROWS - off, stop - pos)
            if b < len(self.blocks):
                out[pos - start : pos - start + take] = self.blocks[b][off : off + take]
            pos += take
        return out

    def read(self, n: int) -> np.ndarray:
        if not self.blocks:
            return np.full(n, np.nan)
        out = np.concatenate(self.blocks) if len(self.blocks) > 1 else self.blocks[0].copy()
        if len(out) < n:  # column created after rows existed
            out = np.concatenate([out, np.full(n - len(out), np.nan)])
        return out[:n]

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)


class GroupStore:
    """The rows of one group: steps, wall times, scalar columns, vectors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._columns: dict[str, _Column] = {}
        self._steps = _Column()
        self._times = _Column()
        self._n = 0  # rows moved into blocks
        self._layout: tuple[str, ...] | None = None
        self._pending: list[list[float]] = []
        self._pending_steps: list[float] = []
        self._pending_times: list[float] = []
        self._vectors: dict[str, list[tuple[int, np.ndarray]]] = {}

    def __len__(self) -> int:
        return self._n + len(self._pending)

    # -- writing -------------------------------------------------------
    def append(self, names: tuple[str, ...], values: list[float], step: int, time: float) -> int:
        """Append one row; returns its index. ``names`` must not repeat."""
        if names is not self._layout and names != self._layout:
            self._flush()
            for name in names:
                if name not in self._columns:
                    self._columns[name] = _Column()
            self._layout = names
        self._pending.append(values)
        self._pending_steps.append(step)
        self._pending_times.append(time)
        if len(self._pending) >= PENDING_ROWS:
            self._flush()
        return len(self) - 1

    def append_vector(self, name: str, row: int, values: np.ndarray) -> None:
        self._vectors.setdefault(name, []).append((row, values))

    def _flush(self) -> None:
        m = len(self._pending)
        if not m:
            return
        start, end = self._n, self._n + m
        nblocks = -(-end // BLOCK_ROWS)
        block = np.array(self._pending, dtype=np.float64).reshape(m, -1)
        for j, name in enumerate(self._layout or ()):
            col = self._columns[name]
            col.ensure(nblocks)
            col.write(start, block[:, j])
        for col, pending in (
            (self._steps, self._pending_steps),
            (self._times, self._pending_times),
        ):
            col.ensure(nblocks)
            col.write(start, np.asarray(pending, dtype=np.float64))
        self._pending, self._pending_steps, self._pending_times = [], [], []
        self._n = end

    # -- reading -------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        self._flush()
        return self._steps.read(self._n).astype(np.int64)

    @property
    def times(self) -> np.ndarray:
        self._flush()
        return self._times.read(self._n)

    def scalar_names(self) -> list[str]:
        return list(self._columns)

    def column(self, name: str) -> np.ndarray:
        """A copy of the column, NaN where a row did not log it."""
        self._flush()
        return self._columns[name].read(self._n)

    def read_rows(
        self, names: list[str], start: int, stop: int
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Steps, times and the named columns of rows ``[start, stop)`` only."""
        self._flush()
        stop = min(stop, self._n)
        steps = self._steps.read_slice(start, stop).astype(np.int64)
        times = self._times.read_slice(start, stop)
        return steps, times, [self._columns[n].read_slice(start, stop) for n in names]

    def vector_names(self) -> list[str]:
        return list(self._vectors)

    def vector(self, name: str) -> np.ndarray:
        """``[rows, width]``: NaN rows where unlogged, NaN-padded to the widest."""
        entries = self._vectors[name]
        width = max(len(v) for _, v in entries)
        out = np.full((len(self), width), np.nan)
        for row, values in entries:
            out[row, : len(values)] = values
        return out

    def nbytes(self) -> int:
        """Bytes held by scalar columns, steps and times (not vectors)."""
        self._flush()
        cols = sum(c.nbytes() for c in self._columns.values())
        return cols + self._steps.nbytes() + self._times.nbytes()


class HistoryStore:
    """All groups of one History, in first-seen order."""

    def __init__(self) -> None:
        self.groups: dict[str, GroupStore] = {}

    def group(self, name: str) -> GroupStore:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = GroupStore(name)
        return g


class HistoryView(Mapping[str, np.ndarray]):
    """``history.history``: full key (``train/loss/mean``) -> 1-d float64 array.

    Vector metrics map to ``[rows, width]`` arrays. Values are copies, so
    callers may modify them freely.
    """

    def __init__(self, store: HistoryStore) -> None:
        self._store = store

    def _index(self) -> dict[str, tuple[GroupStore, str, bool]]:
        index: dict[str, tuple[GroupStore, str, bool]] = {}
        for gname, g in self._store.groups.items():
            for name in g.scalar_names():
                index[f"{gname}/{name}" if gname else name] = (g, name, False)
            for name in g.vector_names():
                index[f"{gname}/{name}" if gname else name] = (g, name, True)
        return index

    def __getitem__(self, key: str) -> np.ndarray:
        g, name, is_vector = self._index()[key]
        return g.vector(name) if is_vector else g.column(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())
