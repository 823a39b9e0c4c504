"""``History``: record metrics every step, reduce across ranks, log, summarise.

The parts live in their own modules (normalize, reduce, store, jsonl,
tracker, summary); this class wires them together and keeps the per-step
path short: one pass over the user's dict, at most two packed collectives,
one JSONL write, one non-blocking tracker call, one cached-layout summary.
"""

from __future__ import annotations

import logging
import math
import operator
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ezpz import dist
from ezpz.history.jsonl import JsonlWriter, decode_value, read_records
from ezpz.history.keys import STEP_FIELD, TIME_FIELD, split_group, split_stat
from ezpz.history.normalize import Normalizer
from ezpz.history.store import GroupStore, HistoryStore, HistoryView

if TYPE_CHECKING:
    import xarray as xr

    from ezpz.tracker import Tracker

logger = logging.getLogger(__name__)

_RANK_SUFFIXES = frozenset(("max_rank", "min_rank"))


def _as_step(step: Any) -> int:
    """numpy ints, and floats or tensors holding a whole number, as an int step."""
    try:
        return operator.index(step)
    except TypeError:
        pass
    try:
        value = math.nan if isinstance(step, str | bytes) else float(step)
    except (TypeError, ValueError):
        value = math.nan
    if not value.is_integer():
        raise TypeError(f"step must be an integer, got {step!r}")
    return int(value)


def _new_run_id() -> str:
    return time.strftime("%Y-%m-%d-%H%M%S") + "-" + secrets.token_hex(3)


class _Layout:
    """How one key set maps onto groups and names; built once per key set."""

    __slots__ = ("full_keys", "groups", "single", "_keep", "_identity")

    def __init__(
        self,
        store: HistoryStore,
        raw_keys: Sequence[str],
        stat_keys: Sequence[str],
        suffixes: Sequence[str],
        extrema: frozenset[str] = frozenset(),
    ) -> None:
        # The flat value list is: raw values, then for each suffix one value per stat key.
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
        self.full_keys: tuple[str, ...] = tuple(full[i] for i in keep)
        by_group: dict[str, list[int]] = {}
        for i in keep:
            by_group.setdefault(owner[i][0], []).append(i)
        self.groups: list[tuple[GroupStore, tuple[str, ...], Callable[[Sequence], Any], int]] = []
        for gname, idx in by_group.items():
            names = tuple(owner[i][1] for i in idx)
            getter = itemgetter(*idx) if idx else (lambda _v: ())
            self.groups.append((store.group(gname), names, getter, len(idx)))
        self._keep = keep
        self._identity = keep == list(range(len(full)))
        # One group taking every value in order: store the flat list as it is.
        self.single = self.groups[0][0] if len(self.groups) == 1 and self._identity else None

    def select(self, flat: list[float]) -> list[float]:
        """The flat values in ``full_keys`` order (drops repeated keys)."""
        return flat if self._identity else [flat[i] for i in self._keep]


class History:
    """Records metrics every step on every rank and reports them.

    See ``docs/history.md`` and the spec for the full contract. Construction
    is collective when statistics are on: every rank of ``comm`` constructs.
    """

    def __init__(
        self,
        *,
        distributed_history: bool | None = None,
        report_dir: str | os.PathLike[str] = "./outputs/history",
        report_enabled: bool = True,
        jsonl_path: str | os.PathLike[str] | None = None,
        jsonl_overwrite: bool = False,
        project_name: str | None = None,
        backends: str | Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        outdir: str | os.PathLike[str] | None = None,
        tracker: Tracker | None = None,
        comm: Any | None = None,
        extrema: Iterable[str] = (),
        jsonl_enabled: bool = True,
    ) -> None:
        self.report_dir = Path(report_dir)
        self.report_enabled = report_enabled
        self.project_name = project_name
        self.config: dict[str, Any] = dict(config or {})
        self.outdir = Path(outdir) if outdir is not None else None
        self._setup_comm(comm, distributed_history, extrema)

        run_id = _new_run_id() if self.rank == 0 else None
        self.run_id: str = self.comm.bcast(run_id, root=0) if self.comm is not None else run_id

        self.store = HistoryStore()
        self._normalize = Normalizer()
        self._layouts: dict[Any, _Layout] = {}
        self._num_updates = 0
        self._after_update: list[Callable[[History, int], None]] = []
        self._closed = False
        self._ranks_flusher: Any = None

        if jsonl_path is None:
            jsonl_path = self.report_dir / f"{self.run_id}.jsonl"
        self.jsonl_path = Path(jsonl_path)
        self._jsonl: JsonlWriter | None = None
        if self.rank == 0 and jsonl_enabled:
            self._jsonl = JsonlWriter(self.jsonl_path, overwrite=jsonl_overwrite)

        from ezpz.tracker import resolve_tracker

        self.tracker = resolve_tracker(
            tracker=tracker,
            backends=backends,
            project_name=project_name,
            config=self.config or None,
            # File backends (csv) write where finalize() will put its outputs.
            outdir=self.outdir if self.outdir is not None else self.report_dir / self.run_id,
            rank=self.rank,
            world_size=self.world_size,
        )
        from ezpz.history.stopwatch import set_active_tracker
        from ezpz.utils import SummaryFormatter

        set_active_tracker(self.tracker)
        self._summary = SummaryFormatter()
        if self.distributed:
            from ezpz.history import ranks_h5

            # Periodic collective flushes of every rank's raw values (ranks.h5),
            # so non-root memory of long runs is written out as it goes.
            ranks_h5.attach(self)

    # -- set-up ----------------------------------------------------------
    def _setup_comm(
        self, comm: Any | None, distributed_history: bool | None, extrema: Iterable[str]
    ) -> None:
        self._owns_comm = False
        self._extrema = frozenset(extrema)
        if comm is None:
            world = dist.get_comm()
            if world is not None and world.Get_size() > 1:
                # A private communicator: ezpz's messages never match the user's.
                comm = world.Dup()
                self._owns_comm = True
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else dist.get_rank()
        self.world_size = comm.Get_size() if comm is not None else dist.get_world_size()
        from ezpz.history.reduce import Reducer, statistics_enabled

        # Statistics need a communicator with more than one rank to reduce over.
        self.distributed = comm is not None and statistics_enabled(
            distributed_history, comm.Get_size()
        )
        self._reducer = Reducer(comm, extrema=tuple(extrema)) if self.distributed else None

    # -- reading ---------------------------------------------------------
    @property
    def history(self) -> HistoryView:
        """Full key -> values (1-d float64; ``[rows, width]`` for vectors)."""
        return HistoryView(self.store)

    # -- the per-step path -----------------------------------------------
    def update(
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        precision: int = 6,
        *,
        commit: bool = True,
        use_wandb: bool | None = None,
    ) -> str:
        """Record one step's metrics; returns the console summary line."""
        if use_wandb is not None:
            from ezpz.tracker import handle_use_wandb

            self.tracker = handle_use_wandb(
                self.tracker,
                use_wandb,
                project_name=self.project_name,
                rank=self.rank,
                world_size=self.world_size,
            )
            from ezpz.history.stopwatch import set_active_tracker

            set_active_tracker(self.tracker)
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"update() takes a dict of metrics, got {type(metrics).__name__}")
        if step is None:
            step = self._num_updates
        elif type(step) is not int:
            step = _as_step(step)
        self._num_updates += 1
        now = time.time()

        norm = self._normalize(metrics)
        raw_keys = tuple(norm.scalar_keys)
        flat = norm.scalar_values
        if self._reducer is not None:
            result = self._reducer.reduce(raw_keys, np.array(flat, dtype=np.float64), step)
            suffixes = tuple(result.stats)
            layout_key: Any = (raw_keys, result.keys, suffixes)
            stat_values = np.concatenate([result.stats[s] for s in suffixes]).tolist()
            flat = flat + stat_values
            layout = self._layouts.get(layout_key)
            if layout is None:
                layout = self._new_layout(layout_key, raw_keys, result.keys, suffixes)
        else:
            layout = self._layouts.get(raw_keys)
            if layout is None:
                layout = self._new_layout(raw_keys, raw_keys, (), ())

        # Store: one row per group this update touches.
        if layout.single is not None:  # one group, keys in order: the common case
            layout.single.append(layout.groups[0][1], flat, step, now)
        else:
            for group, names, getter, count in layout.groups:
                values = getter(flat)
                group.append(names, list(values) if count != 1 else [values], step, now)
        if norm.flat_input and self._reducer is None:
            record = dict(metrics)  # same keys and values; a copy the caller can't mutate
        else:
            record = dict(zip(layout.full_keys, layout.select(flat), strict=True))
        if norm.vectors:
            self._append_vectors(norm.vectors, layout, step, now, record)

        if self._jsonl is not None:
            self._jsonl.write(step, now, record)
        if self.rank == 0:
            self.tracker.log(record, step=step, commit=commit)
        for hook in self._after_update:
            hook(self, step)
        return self._summary.format(record, precision)

    def _append_vectors(
        self,
        vectors: list[tuple[str, np.ndarray]],
        layout: _Layout,
        step: int,
        now: float,
        record: dict[str, Any],
    ) -> None:
        """Store vector metrics in their groups' rows and add them to ``record``."""
        rows = {id(g): len(g) - 1 for g, _, _, _ in layout.groups}
        for key, arr in vectors:
            gname, name = split_group(key)
            g = self.store.group(gname)
            row = rows.get(id(g))
            if row is None:  # a group with only vectors this step gets its own row
                row = rows[id(g)] = g.append((), [], step, now)
            g.append_vector(name, row, arr)
            record[key] = arr.tolist()

    def _new_layout(
        self,
        cache_key: Any,
        raw_keys: Sequence[str],
        stat_keys: Sequence[str],
        suffixes: Sequence[str],
    ) -> _Layout:
        if len(self._layouts) > 4096:  # keys that change every step: don't grow forever
            self._layouts.clear()
        layout = _Layout(self.store, raw_keys, stat_keys, suffixes, self._extrema)
        self._layouts[cache_key] = layout
        return layout

    # -- end of run -------------------------------------------------------
    def finalize(
        self,
        outdir: str | os.PathLike[str] | None = None,
        run_name: str | None = None,
        warmup: float = 0.0,
        num_chains: int = 128,
        **kwargs: Any,
    ) -> xr.Dataset | dict[str, xr.Dataset]:
        """Write datasets, plots and the report; flush and close the backends."""
        from ezpz.history.finalize import finalize

        return finalize(
            self, outdir=outdir, run_name=run_name, warmup=warmup, num_chains=num_chains, **kwargs
        )

    def close(self) -> None:
        """Close the JSONL file and free ezpz's communicator (not the backends)."""
        if self._closed:
            return
        self._closed = True
        if self._jsonl is not None:
            self._jsonl.close()
        if self._reducer is not None:
            self._reducer.close()
        if self._ranks_flusher is not None:
            self._ranks_flusher.close()
        if self._owns_comm and self.comm is not None:
            try:
                self.comm.Free()
            except Exception:  # MPI already finalized at interpreter exit
                pass
            self.comm = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rebuilding ---------------------------------------------------------
    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        *,
        report_dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> History:
        """Rebuild a History (single-process, no backends) from a JSONL log.

        Its ``history`` equals the one of the run that wrote the file, NaN and
        ±inf included. Torn lines of a killed run are skipped with a warning.
        """
        path = Path(path)
        hist = cls(
            distributed_history=False,
            report_dir=report_dir if report_dir is not None else path.parent,
            backends="none",
            config=config,
            comm=_NoComm(),
            jsonl_enabled=False,
        )
        hist.comm = None
        hist.jsonl_path = path
        hist.run_id = path.stem
        for record in read_records(path):
            step = record.pop(STEP_FIELD, hist._num_updates)
            when = record.pop(TIME_FIELD, math.nan)
            hist._append_record(int(step), float(when), record)
            hist._num_updates += 1
        return hist

    def _append_record(self, step: int, when: float, record: dict[str, Any]) -> None:
        scalars: dict[str, float] = {}
        vectors: list[tuple[str, np.ndarray]] = []
        for key, value in record.items():
            decoded = decode_value(value)
            if isinstance(decoded, list):
                vectors.append((key, np.asarray(decoded, dtype=np.float64)))
            elif decoded is not None:
                scalars[key] = decoded
        rows: dict[str, tuple[list[str], list[float]]] = {}
        for key, value in scalars.items():
            stat = split_stat(key, scalars)
            if stat is not None:  # "<key>/mean" lives in the group of <key>
                group, name = split_group(stat[0])
                name = f"{name}/{stat[1]}"
            else:
                group, name = split_group(key)
            names, values = rows.setdefault(group, ([], []))
            names.append(name)
            values.append(value)
        row_of: dict[str, int] = {}
        for group, (names, values) in rows.items():
            row_of[group] = self.store.group(group).append(tuple(names), values, step, when)
        for key, arr in vectors:
            group, name = split_group(key)
            g = self.store.group(group)
            row = row_of.get(group)
            if row is None:  # a group with only vectors in this record: one row
                row = row_of[group] = g.append((), [], step, when)
            g.append_vector(name, row, arr)


class _NoComm:
    """Stands in for a communicator when a History must not touch MPI."""

    def Get_rank(self) -> int:  # noqa: N802 - mpi4py's spelling
        return 0

    def Get_size(self) -> int:  # noqa: N802
        return 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj
