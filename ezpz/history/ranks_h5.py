"""Per-rank raw values in one HDF5 file: ``ranks.h5``, ``[rank, draw]`` per metric.

Every rank's own store holds its raw values. They reach one file in two ways:

* **periodic flushes** from ``update()`` (every ``EZPZ_RANKS_FLUSH_EVERY``
  updates, default 1000): ``update()`` is collective, so every rank is there,
  and each writes the rows it logged since the last flush into a staging file
  ``{report_dir}/{run_id}-ranks.h5``. Nothing is buffered beyond the store,
  so memory stays bounded by the flush interval.
* **the final flush** in ``finalize()``, when every rank calls it.

A flush writes through h5py's ``mpio`` driver when h5py is built with MPI
(every rank writes its own row), else through the fallback: one ``Gatherv``
per group to rank 0, which writes the rows with serial h5py.
``EZPZ_RANKS_H5_DRIVER=gather`` forces the fallback (e.g. on file systems
without MPI-IO locking).

``finalize()`` must not enter a collective unless every rank is in it (the
seed's ``if rank == 0: history.finalize()`` must never hang), so it first runs
:func:`agree_all_ranks`, a probe/acknowledge/decide handshake in which rank 0
decides and everyone obeys. Either all ranks flush collectively, or rank 0
copies the staging file and adds its own unflushed rows (the file's
``complete`` attribute is 0 then and ``rows`` says how far each rank got).

Layout: see docs/finalize.md (``/{group}/{metric}`` float64 ``[rank, draw]``,
``/{group}/step`` int64, ``/{group}/time`` float64, ``/{group}/rows`` int64 ``[rank]``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ezpz.history.dataset import RESERVED_NAMES, safe_name
from ezpz.history.keys import join_key, split_stat

if TYPE_CHECKING:
    from ezpz.history.core import History
    from ezpz.history.store import GroupStore

logger = logging.getLogger(__name__)

FLUSH_EVERY_ENV = "EZPZ_RANKS_FLUSH_EVERY"
DRIVER_ENV = "EZPZ_RANKS_H5_DRIVER"  # "auto" (default), "mpio" or "gather"
WAIT_ENV = "EZPZ_FINALIZE_WAIT"
TIMEOUT_ENV = "EZPZ_FINALIZE_TIMEOUT"
DEFAULT_FLUSH_EVERY = 1000
DEFAULT_WAIT_S = 5.0
DEFAULT_TIMEOUT_S = 300.0
RANKS_FILE = "ranks.h5"
UNPREFIXED_GROUP = "history"
_CHUNK = 4096  # draws per chunk: one rank's row in one chunk, never shared
_TAG_PROBE = 0x5EA1
_TAG_ACK = 0x5EA2
_TAG_DECISION = 0x5EA3
_POLL_S = 0.002


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        logger.warning("%s=%r is not a number; using %s", name, raw, default)
        return default
    return value if value >= 0 else default


def mpio_available() -> bool:
    """True when h5py is built against MPI (the ``mpio`` driver exists)."""
    try:
        import h5py
    except ImportError:
        return False
    return bool(h5py.get_config().mpi)


def _driver_wanted() -> str:
    driver = os.environ.get(DRIVER_ENV, "auto").strip().lower() or "auto"
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
    """Steps, times and the columns of rows ``[start, stop)``."""
    reader = getattr(g, "read_rows", None)  # a slice reader avoids copying whole columns
    if reader is not None:
        steps, times, cols = reader(names, start, stop)
        return steps, times, list(cols)
    return (
        g.steps[start:stop],
        g.times[start:stop],
        [g.column(n)[start:stop] for n in names],
    )


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
        specs = [("step", np.int64, -1, None), ("time", np.float64, np.nan, None)]
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


def _write_all_ranks(f: Any, plan: _Plan, group: str, keys: list[str], blocks: list) -> None:
    """Every rank's rows of one group at once, when all ranks cover the same draws.

    A key a rank did not log is NaN in its block, as the fill value would be.
    """
    _names, start, stop, _block = blocks[0]
    stacked = np.stack([block for *_rest, block in blocks])  # [rank, 2 + keys, rows]
    h5g = f[plan.group_names[group]]
    if stop > start:
        h5g["step"][:, start:stop] = stacked[:, 0].astype(np.int64)
        h5g["time"][:, start:stop] = stacked[:, 1]
        for i, key in enumerate(keys):
            h5g[plan.var_names[group][key]][:, start:stop] = stacked[:, 2 + i]
    h5g["rows"][:] = stop


class RankFlusher:
    """Moves this rank's raw rows into the staging file; registered as an update hook."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.comm: Any | None = None  # a private Dup, made at the first (collective) update
        self.every = DEFAULT_FLUSH_EVERY
        self.path: Path | None = None
        self.updates = 0
        self.flushed: dict[str, int] = {}  # group -> rows of this rank already in the file
        self.plan = _Plan()
        self.driver = "gather"
        self._created = False

    # -- the update hook ----------------------------------------------------
    def __call__(self, history: History, step: int) -> None:
        if self.comm is None:
            self._setup()
        self.updates += 1
        if self.every and self.updates % self.every == 0:
            try:
                self.flush(final=False)
            except Exception:  # a failing flush must never stop training
                logger.exception("ranks.h5: periodic flush failed; finalize() will retry")

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
        hist = self.history
        self.comm = hist.comm.Dup()
        settings = None
        if self.comm.Get_rank() == 0:
            every = int(_env_float(FLUSH_EVERY_ENV, DEFAULT_FLUSH_EVERY))
            path = Path(hist.report_dir).resolve() / f"{hist.run_id}-ranks.h5"
            settings = (every, str(path), _driver_wanted())
        every, path, driver = self.comm.bcast(settings, root=0)
        # Every rank must support the driver rank 0 picked, or all gather.
        ok = self.comm.allreduce(driver != "mpio" or mpio_available(), op=_mpi().LAND)
        self.every, self.path, self.driver = every, Path(path), driver if ok else "gather"

    # -- collective flush ---------------------------------------------------
    def flush(self, *, final: bool) -> None:
        """Collective over all ranks: write every rank's unflushed rows."""
        if self.comm is None:
            self._setup()
        comm = self.comm
        mine = {}
        for gname, g in self.history.store.groups.items():
            mine[gname] = (_raw_names(g), self.flushed.get(gname, 0), len(g))
        everyone = comm.allgather(mine)
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

        f.attrs["run_id"] = str(self.history.run_id)
        f.attrs["world_size"] = int(self.history.world_size)
        f.attrs["ezpz_version"] = str(__version__)
        f.attrs["layout"] = "[rank, draw]"
        f.attrs["complete"] = int(complete)

    def _write_own_rows(self, f: Any, mine: dict, rank: int) -> None:
        """This rank's unflushed rows of every group (``mine``: group -> names, start, n)."""
        for gname, (names, start, n) in mine.items():
            g = self.history.store.groups[gname]
            steps, times, cols = _read_rows(g, names, start, n)
            columns = dict(zip(names, cols, strict=True))
            _write_rank_rows(f, self.plan, gname, rank, start, steps, times, columns)
            f[self.plan.group_names[gname]]["rows"][rank] = n

    def _flush_mpio(self, mode: str, mine: dict, widths: dict[str, int], final: bool) -> None:
        import h5py

        comm = self.comm
        rank, size = comm.Get_rank(), comm.Get_size()
        with h5py.File(self.path, mode, driver="mpio", comm=comm) as f:
            _ensure_layout(f, self.plan, widths, size)  # collective: same plan everywhere
            self._file_attrs(f, complete=final)
            self._write_own_rows(f, mine, rank)

    def _flush_gather(
        self, mode: str, mine: dict, everyone: list[dict], widths: dict[str, int], final: bool
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
                spans = {(r_start, r_n) for _names, r_start, r_n, _block in blocks}
                if len(spans) == 1:  # the usual case: one write per column for all ranks
                    _write_all_ranks(f, self.plan, gname, keys, blocks)
                    continue
                for r, (r_names, r_start, r_n, block) in enumerate(blocks):
                    wanted = set(r_names)
                    cols = {k: block[2 + i] for i, k in enumerate(keys) if k in wanted}
                    steps = block[0].astype(np.int64)
                    _write_rank_rows(f, self.plan, gname, r, r_start, steps, block[1], cols)
                    f[self.plan.group_names[gname]]["rows"][r] = r_n

    def _gather_rows(self, mine: dict, everyone: list[dict]) -> list[tuple[str, list, list]]:
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
                steps, times, cols = _read_rows(self.history.store.groups[gname], names, start, n)
                send[0], send[1] = steps, times
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
                block = recv[offset : offset + count].reshape(width, r_n - r_start)
                blocks.append((r_names, r_start, r_n, block))
                offset += count
            received.append((gname, keys, blocks))
        return received

    # -- finalize -------------------------------------------------------------
    def publish(self, dest: Path) -> Path:
        """Rank 0, after a final flush: move the complete staging file to ``dest``.

        The next flush (should the run go on) starts a fresh staging file holding
        every row again, so a later finalize is complete too.
        """
        assert self.path is not None
        tmp = _temp_beside(dest)
        try:
            shutil.move(str(self.path), tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def restart(self) -> None:
        """Every rank, after a publish: the next flush rewrites all rows into a new file."""
        self._created = False
        self.flushed.clear()

    def write_local(self, dest: Path) -> Path:
        """Rank 0 alone: copy the staging file to ``dest`` and add rank 0's unflushed rows."""
        import h5py

        hist = self.history
        rank, size = hist.rank, hist.world_size
        tmp = _temp_beside(dest)
        try:
            if self.path is not None and self.path.exists():
                shutil.copyfile(self.path, tmp)
                mode = "a"
            else:
                mode = "w"
            with h5py.File(tmp, mode) as f:
                widths = {}
                mine = {}
                for gname, g in hist.store.groups.items():
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
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def _temp_beside(dest: Path) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    return tmp


def attach(history: History) -> RankFlusher | None:
    """Register the periodic flush as an update hook (call once, in the constructor).

    Cheap: imports nothing heavy. Returns None for single-process runs.
    """
    existing = getattr(history, "_ranks_flusher", None)
    if existing is not None:
        return existing
    if history.comm is None or history.world_size <= 1:
        return None
    flusher = RankFlusher(history)
    history._ranks_flusher = flusher
    history._after_update.append(flusher)
    return flusher


def run_tag(run_id: str) -> int:
    """A 62-bit number naming one History, the same on every rank."""
    digest = hashlib.blake2b(str(run_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def agree_all_ranks(comm: Any, rank: int, all_ranks: bool | None, tag: int) -> bool:
    """True when every rank is in finalize (then collectives are safe).

    Rank 0 sends every rank a probe with a fresh nonce, collects the
    acknowledgements that echo it until its deadline, and sends every rank
    its decision, tagged with the same nonce. Everyone obeys that decision,
    so no two ranks can disagree. Messages left over from an earlier
    finalize (rank 0 went alone; or another History whose communicator's
    context MPI reused) carry another nonce or ``tag`` and are discarded.
    ``all_ranks``: True waits up to ``EZPZ_FINALIZE_TIMEOUT`` s (300), False
    decides "rank 0 alone" at once, None waits ``EZPZ_FINALIZE_WAIT`` s (5).
    """
    timeout = _env_float(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)
    if rank == 0:
        if all_ranks is False:
            wait = 0.0
        else:
            wait = timeout if all_ranks else _env_float(WAIT_ENV, DEFAULT_WAIT_S)
        return _decide(comm, wait, tag)
    return _follow(comm, timeout, tag)


def _send(comm: Any, values: list[int], dest: int, msg_tag: int) -> Any:
    mpi = _mpi()
    buf = np.array(values, dtype=np.int64)
    _KEEP_ALIVE.append(buf)  # must outlive a request freed before completion
    return comm.Isend([buf, mpi.INT64_T], dest=dest, tag=msg_tag)


def _recv(comm: Any, source: int, msg_tag: int, n: int) -> np.ndarray:
    mpi = _mpi()
    buf = np.zeros(n, dtype=np.int64)
    comm.Recv([buf, mpi.INT64_T], source=source, tag=msg_tag)
    return buf


def _settle(reqs: list[Any], wait: bool) -> None:
    """Complete sends whose receivers are known to be there; free the others."""
    mpi = _mpi()
    if wait:
        mpi.Request.Waitall(reqs)
        return
    for req in reqs:  # a rank that never comes never matches these
        if not req.Test():
            req.Free()


def _decide(comm: Any, wait: float, tag: int) -> bool:
    mpi = _mpi()
    size = comm.Get_size()
    nonce = secrets.randbits(62)
    probes = [_send(comm, [nonce, tag], r, _TAG_PROBE) for r in range(1, size)]
    acked: set[int] = set()
    status = mpi.Status()
    deadline = time.monotonic() + wait
    while True:
        while comm.Iprobe(source=mpi.ANY_SOURCE, tag=_TAG_ACK, status=status):
            src = status.Get_source()
            if _recv(comm, src, _TAG_ACK, 1)[0] == nonce:  # else: an old acknowledgement
                acked.add(src)
        if len(acked) == size - 1 or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    together = len(acked) == size - 1
    decisions = [_send(comm, [nonce, int(together), tag], r, _TAG_DECISION) for r in range(1, size)]
    _settle(probes + decisions, wait=together)
    if not together:
        logger.info(
            "finalize: %d of %d other ranks joined within %.1fs; rank 0 writes ranks.h5 "
            "alone (call finalize() on every rank for a complete file)",
            len(acked),
            size - 1,
            wait,
        )
    return together


def _follow(comm: Any, timeout: float, tag: int) -> bool:
    deadline = time.monotonic() + timeout

    def poll(msg_tag: int) -> bool:
        while not comm.Iprobe(source=0, tag=msg_tag):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)
        return True

    while poll(_TAG_PROBE):
        nonce, probe_tag = _recv(comm, 0, _TAG_PROBE, 2)
        if probe_tag != tag:
            continue  # another History's leftover
        ack = _send(comm, [nonce], 0, _TAG_ACK)
        while poll(_TAG_DECISION):
            d_nonce, together, d_tag = _recv(comm, 0, _TAG_DECISION, 3)
            if d_nonce == nonce and d_tag == tag:
                break
        else:
            break  # timed out waiting for the decision
        _settle([ack], wait=bool(together))
        if together:
            return True
        # Rank 0 went alone: in this finalize (we are late) or in an earlier one
        # whose messages we just drained. Rank 0 probes as soon as it enters a
        # finalize, so a short grace period tells the two apart.
        grace = time.monotonic() + _env_float(WAIT_ENV, DEFAULT_WAIT_S)
        while not comm.Iprobe(source=0, tag=_TAG_PROBE):
            if time.monotonic() >= min(grace, deadline):
                return False
            time.sleep(_POLL_S)
    logger.warning("finalize: no word from rank 0 within %.0fs; not writing ranks.h5", timeout)
    return False


# Send buffers of requests freed before completion (a few bytes per finalize).
_KEEP_ALIVE: list[np.ndarray] = []
