"""Columnar float64 storage of recorded metrics, one table per group.

Each group (``train``, ``eval``, the unprefixed ``""``) has its own row
("draw") axis. ``update()`` appends one row per group it touches. Rows are
buffered as short Python lists while the key layout stays the same and
moved into fixed-size float64 blocks in bulk, so the hot path is one list
append and memory per stored value stays near 8 bytes (blocks never need
the copy-and-double of a growing array).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

from ezpz.history.keys import split_group

BLOCK_ROWS = 8192  # rows per storage block
PENDING_ROWS = 256  # rows buffered as Python lists before a bulk move


class _Column:
    """A column stored as fixed-size blocks: float64 (NaN where unlogged) or,
    with ``fill=np.int64(0)``, int64 (the steps, exact to 2**63 - 1)."""

    __slots__ = ("blocks", "fill")

    def __init__(self, fill: float | np.int64 = np.nan) -> None:
        self.blocks: list[np.ndarray] = []
        self.fill = fill

    def ensure(self, nblocks: int) -> None:
        while len(self.blocks) < nblocks:
            self.blocks.append(np.full(BLOCK_ROWS, self.fill))

    def write(self, start: int, values: np.ndarray) -> None:
        pos = 0
        while pos < len(values):
            b, off = divmod(start + pos, BLOCK_ROWS)
            take = min(BLOCK_ROWS - off, len(values) - pos)
            self.blocks[b][off : off + take] = values[pos : pos + take]
            pos += take

    def read_slice(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` copied out of the blocks that hold them."""
        out = np.full(max(stop - start, 0), self.fill)
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
            return np.full(n, self.fill)
        out = np.concatenate(self.blocks) if len(self.blocks) > 1 else self.blocks[0].copy()
        if len(out) < n:  # column created after rows existed
            out = np.concatenate([out, np.full(n - len(out), self.fill)])
        return out[:n]

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)


class GroupStore:
    """The rows of one group: steps, wall times, scalar columns, vectors."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._columns: dict[str, _Column] = {}
        self._steps = _Column(np.int64(0))  # int64: steps are exact (docs/history.md, "Steps")
        self._times = _Column()
        self._n = 0  # rows moved into blocks
        self._layout: tuple[str, ...] | None = None
        self._pending: list[list[float]] = []
        self._pending_steps: list[int] = []
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

    def extend(
        self, names: tuple[str, ...], steps: np.ndarray, times: np.ndarray, values: np.ndarray
    ) -> int:
        """Append many rows at once (``values``: ``[rows, len(names)]``); the first row's index.

        The bulk path of a resumed run (ezpz.history.resume): columns are
        written block by block, no per-row Python work.
        """
        self._flush()
        m = len(steps)
        start, end = self._n, self._n + m
        if not m:
            return start
        nblocks = -(-end // BLOCK_ROWS)
        for j, name in enumerate(names):
            col = self._columns.get(name)
            if col is None:
                col = self._columns[name] = _Column()
            col.ensure(nblocks)
            col.write(start, np.asarray(values[:, j], dtype=np.float64))
        for col, data, dtype in ((self._steps, steps, np.int64), (self._times, times, np.float64)):
            col.ensure(nblocks)
            col.write(start, np.asarray(data, dtype=dtype))
        self._n = end
        self._layout = None  # the next append() registers its layout again
        return start

    def append_vector(self, name: str, row: int, values: np.ndarray) -> None:
        self._vectors.setdefault(name, []).append((row, values))

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows (the superseding rule of a resumed run, ezpz.history.resume)."""
        self._flush()
        old, n = self._n, max(0, min(int(n), self._n))
        if n == old:
            return
        for col in (*self._columns.values(), self._steps, self._times):
            pos = n
            while pos < old:  # cleared rows read as unlogged when rows are appended again
                b, off = divmod(pos, BLOCK_ROWS)
                take = min(BLOCK_ROWS - off, old - pos)
                if b < len(col.blocks):
                    col.blocks[b][off : off + take] = col.fill
                pos += take
        self._n = n
        for name in list(self._vectors):
            kept = [(row, v) for row, v in self._vectors[name] if row < n]
            if kept:
                self._vectors[name] = kept
            else:
                del self._vectors[name]

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
        for col, pending, dtype in (
            (self._steps, self._pending_steps, np.int64),
            (self._times, self._pending_times, np.float64),
        ):
            col.ensure(nblocks)
            col.write(start, np.asarray(pending, dtype=dtype))
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

    def append_vectors(
        self,
        vectors: Iterable[tuple[str, np.ndarray]],
        rows: dict[str, int],
        step: int,
        time: float,
    ) -> None:
        """Store vector metrics (full key, values) in the rows of this step.

        ``rows``: group name -> the row this step already appended to it; a
        group that has only vectors this step gets a new row (and ``rows``
        is updated with it).
        """
        for key, values in vectors:
            gname, name = split_group(key)
            g = self.group(gname)
            row = rows.get(gname)
            if row is None:
                row = rows[gname] = g.append((), [], step, time)
            g.append_vector(name, row, values)


_RANK_SUFFIXES = frozenset(("max_rank", "min_rank"))


class LayoutEntry(NamedTuple):
    """The part of one update's flat value list that goes to one group."""

    group: GroupStore
    names: tuple[str, ...]  # column names within the group, in row order
    take: Callable[[Sequence[float]], Any]  # flat values -> this group's (one value or a tuple)
    size: int  # how many values ``take`` returns (``count`` would shadow tuple.count)


class Layout:
    """How one key set's flat value list maps onto groups and column names.

    The flat list is the raw values (``raw_keys`` order), then for each
    statistic suffix one value per ``stat_keys`` entry. Built once per key
    set (see :class:`LayoutCache`); afterwards :meth:`append` stores a step.
    """

    __slots__ = (
        "entries",
        "full_keys",
        "_keep",
        "_identity",
        "_single",
        "_single_names",
        "_blank",
    )

    def __init__(
        self,
        store: HistoryStore,
        raw_keys: Sequence[str],
        stat_keys: Sequence[str] = (),
        suffixes: Sequence[str] = (),
        extrema: frozenset[str] = frozenset(),
    ) -> None:
        full = list(raw_keys)
        owner = [split_group(k) for k in raw_keys]
        unused: set[int] = set()
        for suffix in suffixes:
            rank_suffix = suffix in _RANK_SUFFIXES
            for k in stat_keys:
                group, name = split_group(k)
                if rank_suffix and k not in extrema:  # only opted-in keys get rank columns
                    unused.add(len(full))
                full.append(f"{k}/{suffix}")
                owner.append((group, f"{name}/{suffix}"))
        # A user key equal to a statistic's name ("loss/mean" logged raw beside
        # "loss"): the statistic, which comes last, wins.
        last: dict[str, int] = {}
        for i, key in enumerate(full):
            if i not in unused:
                last[key] = i
        keep = sorted(last.values())
        #: the keys of the stored values, in flat order (repeats and unused rank columns dropped)
        self.full_keys: tuple[str, ...] = tuple(full[i] for i in keep)
        # Copied and filled per step: a dict of the right size with the keys in
        # place takes no resizing (half the time of dict(zip(...)) at 50 keys).
        self._blank: dict[str, Any] = dict.fromkeys(self.full_keys)
        by_group: dict[str, list[int]] = {}
        for i in keep:
            by_group.setdefault(owner[i][0], []).append(i)
        self.entries: list[LayoutEntry] = []
        for gname, idx in by_group.items():
            names = tuple(owner[i][1] for i in idx)
            take = itemgetter(*idx) if idx else (lambda _v: ())
            self.entries.append(LayoutEntry(store.group(gname), names, take, len(idx)))
        self._keep = keep
        self._identity = keep == list(range(len(full)))
        # One group taking every value in order: the flat list is stored as it is.
        single = len(self.entries) == 1 and self._identity
        self._single = self.entries[0].group if single else None
        self._single_names = self.entries[0].names if single else ()

    def append(self, flat: list[float], step: int, time: float) -> None:
        """Store one step: a row in every group this key set touches."""
        if self._single is not None:  # one group, keys in order: the common case
            self._single.append(self._single_names, flat, step, time)
            return
        for group, names, take, count in self.entries:
            values = take(flat)
            group.append(names, list(values) if count != 1 else [values], step, time)

    def record(self, flat: list[float]) -> dict[str, Any]:
        """``{full key: value}`` for one step's flat values (the record the sinks get)."""
        record = self._blank.copy()
        record.update(zip(self.full_keys, self.select(flat), strict=True))
        return record

    def select(self, flat: list[float]) -> list[float]:
        """The flat values in ``full_keys`` order (drops repeated keys)."""
        return flat if self._identity else [flat[i] for i in self._keep]

    def rows(self) -> dict[str, int]:
        """Group name -> the row the last :meth:`append` wrote."""
        return {e.group.name: len(e.group) - 1 for e in self.entries}


class LayoutCache:
    """One :class:`Layout` per key set seen, bounded (keys that change every step)."""

    MAX_LAYOUTS = 4096

    __slots__ = ("_store", "_extrema", "_layouts", "_last")

    def __init__(self, store: HistoryStore, extrema: Iterable[str] = ()) -> None:
        self._store = store
        self._extrema = frozenset(extrema)
        self._layouts: dict[Any, Layout] = {}
        # The last (raw_keys, stat_keys, suffixes, layout): steps repeat their key
        # tuples as the same objects (Normalizer, Reducer), so identity finds it.
        self._last: tuple[Any, Any, Any, Layout] | None = None

    def get(
        self,
        raw_keys: tuple[str, ...],
        stat_keys: tuple[str, ...] = (),
        suffixes: tuple[str, ...] = (),
    ) -> Layout:
        """The layout of this key set, built on first sight."""
        last = self._last
        if (
            last is not None
            and raw_keys is last[0]
            and stat_keys is last[1]
            and suffixes == last[2]
        ):
            return last[3]
        cache_key: Any = (raw_keys, stat_keys, suffixes) if suffixes else raw_keys
        layout = self._layouts.get(cache_key)
        if layout is None:
            if len(self._layouts) > self.MAX_LAYOUTS:
                self._layouts.clear()
            layout = Layout(self._store, raw_keys, stat_keys, suffixes, self._extrema)
            self._layouts[cache_key] = layout
        self._last = (raw_keys, stat_keys, suffixes, layout)
        return layout


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
