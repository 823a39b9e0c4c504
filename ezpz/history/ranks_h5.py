"""Per-rank raw values in one HDF5 file: ``ranks.h5``, ``[rank, draw]`` per metric.

Every rank's own store holds its raw values. They reach one file in two ways:

* **periodic flushes** from ``update()`` (every ``EZPZ_RANKS_FLUSH_EVERY``
  updates, default 1000, and no more often than every
  ``EZPZ_RANKS_FLUSH_SECONDS``, default 10 s when ``EZPZ_RANKS_FLUSH_EVERY``
  is not set): ``update()`` is collective, so every rank is there, and each
  writes the rows it logged since the last flush into a staging file
  ``{report_dir}/{run_id}-ranks.h5``. Nothing is buffered beyond the store.
  A flush costs milliseconds (HDF5 open, write, close), so a loop of
  microsecond steps would spend a fifth of its time in flushes of 1000
  steps; the time floor stretches the interval instead. Rank 0 measures the
  last interval and proposes the next one in the flush's own ``allgather``,
  so every rank agrees without another collective.
* **the final flush** in ``finalize()``, when every rank calls it.

A flush writes through h5py's ``mpio`` driver when h5py is built with MPI
(every rank writes its own row), else through the fallback: one ``Gatherv``
per group to rank 0, which writes the rows with serial h5py.
``EZPZ_RANKS_H5_DRIVER=gather`` forces the fallback (e.g. on file systems
without MPI-IO locking).

``History`` builds one :class:`RankFlusher` per distributed run and calls
:meth:`RankFlusher.after_update` after every update; ``finalize()`` calls
:meth:`RankFlusher.write_final`. That must not enter a collective unless
every rank is in it (``if rank == 0: history.finalize()`` must never hang),
so it first runs the handshake of :mod:`ezpz.history.finalize_handshake`, in
which rank 0 decides and everyone obeys. Either all ranks flush
collectively, or rank 0 copies the staging file and adds its own unflushed
rows (the file's ``complete`` attribute is 0 then and ``rows`` says how far
each rank got).

Layout: see docs/finalize.md (``/{group}/{metric}`` float64 ``[rank, draw]``,
``/{group}/step`` int64, ``/{group}/time`` float64, ``/{group}/rows`` int64 ``[rank]``).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ezpz._env import env_float, env_str
from ezpz._files import atomic_path
from ezpz.history.dataset import RESERVED_NAMES, safe_name
from ezpz.history.finalize_handshake import FinalizeHandshake, run_tag
from ezpz.history.keys import join_key, split_stat

if TYPE_CHECKING:
    from ezpz.history.runinfo import RunInfo
    from ezpz.history.store import GroupStore, HistoryStore

logger = logging.getLogger(__name__)

#: one rank's unflushed rows per group: group -> (column names, first row, rows)
_Mine = dict[str, tuple[list[str], int, int]]

FLUSH_EVERY_ENV = "EZPZ_RANKS_FLUSH_EVERY"
FLUSH_SECONDS_ENV = "EZPZ_RANKS_FLUSH_SECONDS"
DRIVER_ENV = "EZPZ_RANKS_H5_DRIVER"  # "auto" (default), "mpio" or "gather"
DEFAULT_FLUSH_EVERY = 1000
DEFAULT_FLUSH_SECONDS = 10.0  # when EZPZ_RANKS_FLUSH_EVERY is not set
RANKS_FILE = "ranks.h5"
_FLUSH_BYTES = 64 << 20  # a stretched interval's rows of all ranks stay under this
UNPREFIXED_GROUP = "history"
_CHUNK = 4096  # draws per chunk: one rank's row in one chunk, never shared


def mpio_available() -> bool:
    """True when h5py is built against MPI (the ``mpio`` driver exists)."""
    try:
        import h5py
    except ImportError:
        return False
    return bool(h5py.get_config().mpi)


def _driver_wanted() -> str:
    driver = env_str(DRIVER_ENV, "auto").lower()
    if driver not in ("auto", "mpio", "gather"):
        logger.warning("%s=%r: expected auto, mpio or gather; using auto", DRIVER_ENV, driver)
        driver = "auto"
    if driver == "mpio" and not mpio_available():
        logger.warning("%s=mpio but h5py has no MPI support; using the gather fallback", DRIVER_ENV)
        return "gather"
    if driver == "auto":
        return "mpio" if mpio_available() else "gather"
    return driver


def _raw_names(g: GroupStore) -> list[str]:
    """Scalar columns of ``g`` that hold this rank's own values (not statistics)."""
    names = g.scalar_names()
    return [n for n in names if split_stat(n, names) is None]


def _read_rows(
    g: GroupStore, names: list[str], start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Steps, times and the columns of rows ``[start, stop)`` (copies only those rows)."""
    steps, times, cols = g.read_rows(names, start, stop)
    return steps, times, list(cols)


class _Block(NamedTuple):
    """One rank's new rows of one group, as gathered to rank 0."""

    names: list[str]  # the keys this rank logged in the group
    start: int  # first row not yet in the file
    stop: int  # rows this rank has
    values: np.ndarray  # [2 + keys, stop - start]: step, time, then the plan's keys


class _Plan:
    """The file layout every rank agrees on: group and variable names, widths."""

    def __init__(self) -> None:
        self.group_names: dict[str, str] = {}  # store group -> HDF5 group name
        self.var_names: dict[str, dict[str, str]] = {}  # store group -> {key -> variable}
        self._taken_groups: set[str] = set()

    def add(self, group: str, keys: list[str]) -> None:
        if group not in self.group_names:
            base = safe_name(group) if group else UNPREFIXED_GROUP
            name, i = base, 1
            while name in self._taken_groups:
                i += 1
                name = f"{base}_{i}"
            self._taken_groups.add(name)
            self.group_names[group] = name
            self.var_names[group] = {}
        variables = self.var_names[group]
        taken = set(variables.values()) | RESERVED_NAMES | {"rows"}
        for key in keys:
            if key in variables:
                continue
            base = safe_name(key)
            name, i = base, 1
            while name in taken:
                i += 1
                name = f"{base}_{i}"
            taken.add(name)
            variables[key] = name


def _ensure_layout(f: Any, plan: _Plan, widths: dict[str, int], world_size: int) -> None:
    """Create missing groups/datasets and grow them to ``widths`` (collective under mpio)."""
    for group, h5name in plan.group_names.items():
        h5g = f.require_group(h5name)
        h5g.attrs["group"] = group
        if "rows" not in h5g:
            h5g.create_dataset("rows", data=np.zeros(world_size, dtype=np.int64))
        specs: list[tuple[str, Any, float, str | None]] = [
            ("step", np.int64, -1, None),
            ("time", np.float64, np.nan, None),
        ]
        specs += [(var, np.float64, np.nan, key) for key, var in plan.var_names[group].items()]
        width = widths.get(group, 0)
        for var, dtype, fill, key in specs:
            if var not in h5g:
                ds = h5g.create_dataset(
                    var,
                    shape=(world_size, width),
                    maxshape=(world_size, None),
                    chunks=(1, _CHUNK),
                    dtype=dtype,
                    fillvalue=fill,
                )
                if key is not None:
                    ds.attrs["key"] = key
                    ds.attrs["full_key"] = join_key(group, key)
            elif h5g[var].shape[1] < width:
                h5g[var].resize(width, axis=1)


def _write_rank_rows(
    f: Any,
    plan: _Plan,
    group: str,
    rank: int,
    start: int,
    steps: np.ndarray,
    times: np.ndarray,
    columns: dict[str, np.ndarray],
) -> None:
    """Write one rank's rows ``[start, start + len(steps))`` of one group."""
    h5g = f[plan.group_names[group]]
    stop = start + len(steps)
    if stop > start:
        h5g["step"][rank, start:stop] = steps
        h5g["time"][rank, start:stop] = times
        for key, values in columns.items():
            h5g[plan.var_names[group][key]][rank, start:stop] = values


def _write_all_ranks(
    f: Any, plan: _Plan, group: str, keys: list[str], blocks: list[_Block]
) -> None:
    """Every rank's rows of one group at once, when all ranks cover the same draws.

    A key a rank did not log is NaN in its block, as the fill value would be.
    """
    start, stop = blocks[0].start, blocks[0].stop
    stacked = np.stack([b.values for b in blocks])  # [rank, 2 + keys, rows]
    h5g = f[plan.group_names[group]]
    if stop > start:
        h5g["step"][:, start:stop] = stacked[:, 0].view(np.int64)  # bit-exact (see _gather_rows)
        h5g["time"][:, start:stop] = stacked[:, 1]
        for i, key in enumerate(keys):
            h5g[plan.var_names[group][key]][:, start:stop] = stacked[:, 2 + i]
    h5g["rows"][:] = stop


class RankFlusher:
    """Moves this rank's raw rows into the staging file and, at the end, ``ranks.h5``.

    ``History`` builds one for a distributed run (``comm`` with more than one
    rank) and calls :meth:`after_update` after every update, on every rank.
    The flusher reads only ``store`` and the run's identity; it never sees
    the History.
    """

    def __init__(self, run: RunInfo, store: HistoryStore, comm: Any) -> None:
        self.run = run
        self.store = store
        self._parent = comm  # History's communicator: Dup'ed at the first update
        self.comm: Any = None  # the private Dup (None until the first, collective, update)
        self.every = DEFAULT_FLUSH_EVERY
        self.seconds = 0.0  # the time floor between periodic flushes (0: none)
        self.path: Path | None = None
        self.updates = 0
        self.due = DEFAULT_FLUSH_EVERY  # the update count of the next periodic flush
        self._last_flush = (0, 0.0)  # (updates, time.monotonic()) at the last periodic flush
        self.flushed: dict[str, int] = {}  # group -> rows of this rank already in the file
        self.plan = _Plan()
        self.driver = "gather"
        self._created = False
        self.handshake = FinalizeHandshake(run_tag(run.run_id))

    # -- per update -----------------------------------------------------------
    def after_update(self) -> None:
        """Called by ``History.update()`` on every rank: a periodic flush every ``every``."""
        if self.comm is None:
            self._setup()
        self.updates += 1
        if self.every and self.updates >= self.due:
            try:
                self.flush(final=False)
            except Exception:  # a failing flush must never stop training
                logger.exception("ranks.h5: periodic flush failed; finalize() will retry")
                self.due = max(self.due, self.updates + self.every)

    def close(self) -> None:
        """Free the private communicator (History.close calls it; safe twice)."""
        if self.comm is not None:
            try:
                self.comm.Free()
            except Exception:  # MPI already finalized at interpreter exit
                pass
            self.comm = None

    def _setup(self) -> None:
        """Collective: private communicator, shared settings from rank 0."""
        from ezpz.history.timed_collectives import timed_bcast, timed_dup

        # Polled under EZPZ_COLLECTIVE_TIMEOUT: a missing rank is an error, not a hang.
        self.comm = timed_dup(self._parent, "ranks.h5 communicator (Dup)")
        settings = None
        if self.comm.Get_rank() == 0:
            every = int(env_float(FLUSH_EVERY_ENV, DEFAULT_FLUSH_EVERY, minimum=0.0))
            # An interval the user set in updates is kept exactly, unless a time floor is set too.
            floor = 0.0 if env_str(FLUSH_EVERY_ENV) else DEFAULT_FLUSH_SECONDS
            seconds = env_float(FLUSH_SECONDS_ENV, floor, minimum=0.0)
            path = Path(self.run.report_dir).resolve() / f"{self.run.run_id}-ranks.h5"
            settings = (every, seconds, str(path), _driver_wanted())
        every, seconds, path, driver = timed_bcast(self.comm, settings, "ranks.h5 settings (bcast)")
        # Every rank must support the driver rank 0 picked, or all gather.
        ok = self.comm.allreduce(driver != "mpio" or mpio_available(), op=_mpi().LAND)
        self.every, self.path, self.driver = every, Path(path), driver if ok else "gather"
        self.seconds, self.due = seconds, every
        self._last_flush = (self.updates, time.monotonic())

    def _next_interval(self, mine: _Mine) -> int:
        """Rank 0's proposal: updates until the next periodic flush.

        ``every``, stretched so that at the last interval's pace the next flush
        comes no sooner than ``seconds`` from now, at most 100x per flush (one
        fast stretch, a warm-up, cannot set it for good) and at most what keeps
        a flush's rows of all ranks under ``_FLUSH_BYTES`` (the gather path
        holds them on rank 0 at once).
        """
        updates, since = self._last_flush
        now = time.monotonic()
        self._last_flush = (self.updates, now)
        steps, elapsed = self.updates - updates, now - since
        if not self.seconds or steps <= 0 or elapsed >= self.seconds:
            return self.every
        stretch = min(self.seconds / max(elapsed, 1e-9), 100.0)
        columns = sum(len(names) + 2 for names, _start, _n in mine.values())  # + step, time
        row_bytes = 8 * max(columns, 1) * self.run.world_size
        return max(self.every, min(math.ceil(steps * stretch), _FLUSH_BYTES // row_bytes))

    # -- finalize ---------------------------------------------------------------
    def write_final(self, dest: Path, all_ranks: bool | None) -> Path | None:
        """``ranks.h5`` at ``dest``; every rank calls it. Returns the path on rank 0.

        Collective when every rank is in finalize (agreed by the handshake),
        else rank 0 alone writes what it has (``complete`` = 0).
        """
        comm = self.comm if self.comm is not None else self._parent
        if self.handshake.agree(comm, all_ranks):
            self.flush(final=True)
            published = self.publish(dest) if self.run.rank == 0 else None
            self.restart()
            return published
        if self.run.rank != 0:
            return None
        return self.write_local(dest)

    # -- collective flush ---------------------------------------------------
    def flush(self, *, final: bool) -> None:
        """Collective over all ranks: write every rank's unflushed rows."""
        if self.comm is None:
            self._setup()
        comm = self.comm
        mine = {}
        for gname, g in self.store.groups.items():
            mine[gname] = (_raw_names(g), self.flushed.get(gname, 0), len(g))
        proposal = None if final or comm.Get_rank() != 0 else self._next_interval(mine)
        shared = comm.allgather((mine, proposal))
        everyone = [meta for meta, _ in shared]
        if not final:  # everyone takes rank 0's proposal: the next flush stays collective
            self.due = self.updates + (shared[0][1] or self.every)
        widths: dict[str, int] = {}
        for meta in everyone:
            for gname, (names, _start, n) in meta.items():
                self.plan.add(gname, names)
                widths[gname] = max(widths.get(gname, 0), n)
        assert self.path is not None
        mode = "a" if self._created else "w"
        error: Exception | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.driver == "mpio":
                self._flush_mpio(mode, mine, widths, final)
            else:
                self._flush_gather(mode, mine, everyone, widths, final)
        except Exception as exc:  # agreed on below, so all ranks react alike
            error = exc
        if not comm.allreduce(error is None, op=_mpi().LAND):
            # Some rank failed: the file may be partial. Start over at the next flush.
            self._created = False
            self.flushed.clear()
            if error is not None:
                raise error
            raise RuntimeError("ranks.h5: the flush failed on another rank")
        self._created = True
        for gname, (_names, _start, n) in mine.items():
            self.flushed[gname] = n
        logger.debug("ranks.h5: flushed to %s (driver %s)", self.path, self.driver)

    def _file_attrs(self, f: Any, *, complete: bool) -> None:
        """Same values on every rank (attribute writes are collective under mpio)."""
        from ezpz import __version__

        f.attrs["run_id"] = str(self.run.run_id)
        f.attrs["world_size"] = int(self.run.world_size)
        f.attrs["ezpz_version"] = str(__version__)
        f.attrs["layout"] = "[rank, draw]"
        f.attrs["complete"] = int(complete)

    def _write_own_rows(self, f: Any, mine: _Mine, rank: int) -> None:
        """This rank's unflushed rows of every group (``mine``: group -> names, start, n)."""
        for gname, (names, start, n) in mine.items():
            g = self.store.groups[gname]
            steps, times, cols = _read_rows(g, names, start, n)
            columns = dict(zip(names, cols, strict=True))
            _write_rank_rows(f, self.plan, gname, rank, start, steps, times, columns)
            f[self.plan.group_names[gname]]["rows"][rank] = n

    def _flush_mpio(self, mode: str, mine: _Mine, widths: dict[str, int], final: bool) -> None:
        import h5py

        comm = self.comm
        rank, size = comm.Get_rank(), comm.Get_size()
        with h5py.File(self.path, mode, driver="mpio", comm=comm) as f:
            _ensure_layout(f, self.plan, widths, size)  # collective: same plan everywhere
            self._file_attrs(f, complete=final)
            self._write_own_rows(f, mine, rank)

    def _flush_gather(
        self, mode: str, mine: _Mine, everyone: list[_Mine], widths: dict[str, int], final: bool
    ) -> None:
        # Collectives first, file work after: a failing write on rank 0 must never
        # leave the other ranks blocked in a Gatherv it skipped.
        received = self._gather_rows(mine, everyone)
        if self.comm.Get_rank() != 0:
            return
        import h5py

        with h5py.File(self.path, mode) as f:
            _ensure_layout(f, self.plan, widths, self.comm.Get_size())
            self._file_attrs(f, complete=final)
            for gname, keys, blocks in received:
                if len({(b.start, b.stop) for b in blocks}) == 1:
                    # the usual case: one write per column for all ranks
                    _write_all_ranks(f, self.plan, gname, keys, blocks)
                    continue
                for r, b in enumerate(blocks):
                    wanted = set(b.names)
                    cols = {k: b.values[2 + i] for i, k in enumerate(keys) if k in wanted}
                    steps = b.values[0].view(np.int64)  # bit-exact (see _gather_rows)
                    _write_rank_rows(f, self.plan, gname, r, b.start, steps, b.values[1], cols)
                    f[self.plan.group_names[gname]]["rows"][r] = b.stop

    def _gather_rows(
        self, mine: _Mine, everyone: list[_Mine]
    ) -> list[tuple[str, list[str], list[_Block]]]:
        """One Gatherv per group of every rank's new rows; the blocks (rank 0 only)."""
        mpi = _mpi()
        comm = self.comm
        rank = comm.Get_rank()
        received = []
        for gname in self.plan.group_names:
            keys = list(self.plan.var_names[gname])
            width = 2 + len(keys)  # rows of [step, time, *keys] in the plan's key order
            metas = [meta.get(gname, ([], 0, 0)) for meta in everyone]
            counts = [width * (n - start) for _names, start, n in metas]
            if not any(counts):
                continue
            names, start, n = mine.get(gname, ([], 0, 0))
            send = np.full((width, n - start), np.nan)
            if n > start:
                steps, times, cols = _read_rows(self.store.groups[gname], names, start, n)
                # Steps travel as their int64 bits in the float64 buffer (read back
                # with .view(np.int64)): a float64 value would round steps >= 2**53.
                send[0], send[1] = np.asarray(steps, dtype=np.int64).view(np.float64), times
                index = {k: i for i, k in enumerate(keys)}
                for name, col in zip(names, cols, strict=True):
                    send[2 + index[name]] = col
            if rank != 0:
                comm.Gatherv(send.ravel(), None, root=0)
                continue
            recv = np.empty(sum(counts), dtype=np.float64)
            comm.Gatherv(send.ravel(), [recv, counts, mpi.DOUBLE], root=0)
            blocks, offset = [], 0
            for (r_names, r_start, r_n), count in zip(metas, counts, strict=True):
                values = recv[offset : offset + count].reshape(width, r_n - r_start)
                blocks.append(_Block(r_names, r_start, r_n, values))
                offset += count
            received.append((gname, keys, blocks))
        return received

    def publish(self, dest: Path) -> Path:
        """Rank 0, after a final flush: move the complete staging file to ``dest``.

        The next flush (should the run go on) starts a fresh staging file holding
        every row again, so a later finalize is complete too.
        """
        assert self.path is not None
        with atomic_path(dest) as tmp:
            shutil.move(str(self.path), tmp)
        return dest

    def restart(self) -> None:
        """Every rank, after a publish: the next flush rewrites all rows into a new file."""
        self._created = False
        self.flushed.clear()

    def write_local(self, dest: Path) -> Path:
        """Rank 0 alone: copy the staging file to ``dest`` and add rank 0's unflushed rows."""
        import h5py

        rank, size = self.run.rank, self.run.world_size
        with atomic_path(dest) as tmp:
            if self.path is not None and self.path.exists():
                shutil.copyfile(self.path, tmp)
                mode = "a"
            else:
                mode = "w"
            with h5py.File(tmp, mode) as f:
                widths = {}
                mine = {}
                for gname, g in self.store.groups.items():
                    names = _raw_names(g)
                    self.plan.add(gname, names)
                    mine[gname] = (names, self.flushed.get(gname, 0), len(g))
                    widths[gname] = len(g)
                    if self.plan.group_names[gname] in f:
                        widths[gname] = max(
                            len(g), f[self.plan.group_names[gname]]["step"].shape[1]
                        )
                _ensure_layout(f, self.plan, widths, size)
                self._file_attrs(f, complete=False)
                self._write_own_rows(f, mine, rank)
        return dest


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI
