"""``History``: record metrics every step, reduce across ranks, log, summarise.

``History`` is the one place that knows all the parts. It builds them and
hands each one narrow inputs (the run's :class:`~ezpz.history.runinfo.RunInfo`,
the store, the communicator); no part imports this module. ``update()`` is
the pipeline of ``docs/architecture.md``:

* normalize: :class:`~ezpz.history.normalize.Normalizer` (one pass over the dict);
* reduce: :class:`~ezpz.history.reduce.Reducer` (distributed runs only);
* store: :class:`~ezpz.history.store.HistoryStore`, through a cached
  :class:`~ezpz.history.store.Layout` per key set;
* sinks: the JSONL line (rank 0), the tracker (rank 0), the per-rank
  flusher (:class:`~ezpz.history.ranks_h5.RankFlusher`, every rank);
* summary: :class:`~ezpz.history.summary.SummaryFormatter`.

``finalize()`` delegates to :mod:`ezpz.history.finalize`, ``from_jsonl()`` to
:mod:`ezpz.history.rebuild`.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ezpz import dist
from ezpz.history.compat import HistoryCompat
from ezpz.history.jsonl import JsonlWriter
from ezpz.history.normalize import STEP_MAX, STEP_MIN, Normalized, Normalizer, as_step
from ezpz.history.outdir_lock import OutdirInUseError, OutdirLock
from ezpz.history.runinfo import RunInfo
from ezpz.history.store import HistoryStore, HistoryView, Layout, LayoutCache

if TYPE_CHECKING:
    import xarray as xr

    from ezpz.history.ranks_h5 import RankFlusher
    from ezpz.tracker import Tracker

logger = logging.getLogger(__name__)

#: ``report_dir`` when neither it nor ``outdir`` is given.
DEFAULT_REPORT_DIR = "./outputs/history"


def _new_run_id() -> str:
    return time.strftime("%Y-%m-%d-%H%M%S") + "-" + secrets.token_hex(3)


class History(HistoryCompat):
    """Records metrics every step on every rank and reports them.

    The ezpz 0.26 names (``.data``, ``.groups``, ``get_dataset()``,
    ``plot_all()``, ...) come from :class:`~ezpz.history.compat.HistoryCompat`.

    See ``docs/history.md`` for the full contract. Construction is collective
    when statistics are on: every rank of ``comm`` constructs. ``mpi=False``
    builds a single-process History that never touches MPI (rank 0 of 1, no
    statistics, no ranks.h5), e.g. to rebuild a run offline.
    """

    # Set by _setup_comm(); declared here so every method sees their types.
    comm: Any
    distributed: bool
    _reducer: Any

    def __init__(
        self,
        *,
        distributed_history: bool | None = None,
        report_dir: str | os.PathLike[str] | None = None,
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
        run_name: str | None = None,
        mpi: bool = True,
        resume: bool | str | os.PathLike[str] | None = None,
        handle_signals: bool | None = None,
    ) -> None:
        # With outdir= and no report_dir=, everything the run writes (the JSONL,
        # ranks.h5 staging) lands under outdir; nothing in the working directory.
        if report_dir is None:
            report_dir = outdir if outdir is not None else DEFAULT_REPORT_DIR
        self.report_dir = Path(report_dir)
        self.report_enabled = report_enabled
        self.project_name = project_name
        from ezpz.history.resume import run_name_wanted

        self.run_name = run_name_wanted(run_name)  # else EZPZ_RUN_NAME
        self.config: dict[str, Any] = dict(config or {})
        self.outdir = Path(outdir) if outdir is not None else None
        self._setup_comm(comm if mpi else None, distributed_history, extrema, mpi)

        # Rank 0 picks the run id and locks outdir (one live run per outdir);
        # every rank learns both, so a refusal raises on every rank alike.
        self._lock: OutdirLock | None = None
        self._ended = False  # close() or finalize() was called: update() says so
        self._warned_ended: set[str] = set()
        # Start or resume (ezpz.history.lifecycle): rank 0 decides, every rank agrees.
        from ezpz.history.lifecycle import Lifecycle, LifecycleParts

        self._life = Lifecycle(
            resume=resume if mpi else False,
            handle_signals=handle_signals if mpi else False,
            run_name=self.run_name,
            report_dir=self.report_dir,
            jsonl_path=jsonl_path,
            comm=self.comm,
            rank=self.rank,
        )
        if self._life.resumed:
            jsonl_path = self._life.jsonl_path  # the resumed run's JSONL, appended to
        run_id = refusal = None
        if self.rank == 0:
            run_id = self._life.run_id or _new_run_id()
            refusal = self._lock_outdir(run_id)
        if self.comm is not None:
            from ezpz.history.timed_collectives import timed_bcast

            run_id, refusal = timed_bcast(
                self.comm, (run_id, refusal), "History() run id and outdir lock (bcast)"
            )
        if refusal is not None:
            self._free_comm()
            raise OutdirInUseError(refusal)
        assert run_id is not None
        self.run_id: str = run_id
        if jsonl_path is None:
            jsonl_path = self.report_dir / f"{self.run_id}.jsonl"
        self.jsonl_path = Path(jsonl_path)

        # The parts, in the order update() uses them.
        self._num_updates = 0
        self._closed = False
        self._normalize = Normalizer()
        self.store = HistoryStore()
        self._layouts = LayoutCache(self.store, extrema)
        # A resumed run: its history so far, its files repaired before they are opened.
        self._num_updates = self._life.reload(self.store, self.comm, self.rank)
        self._life.prepare_files(self.run_info().default_outdir(), self.config or None)
        self._jsonl: JsonlWriter | None = None
        if self.rank == 0 and jsonl_enabled:
            self._jsonl = JsonlWriter(self.jsonl_path, overwrite=jsonl_overwrite)
        self.tracker = self._build_tracker(tracker, backends)
        self._rank_flusher = self._build_rank_flusher()
        # Periodic flushes are collective, so only runs whose updates are (statistics on).
        self._flush_after_update = self._rank_flusher if self.distributed else None
        # The start event, the per-rank values saved by a signal, the signal handlers.
        self._life.begin(
            LifecycleParts(
                run=self.run_info(),
                store=self.store,
                comm=self.comm,
                tracker=self.tracker,
                jsonl=self._jsonl,
                flusher=self._rank_flusher,
                reducer=self._reducer,
            )
        )
        from ezpz.history.summary import SummaryFormatter

        self._summary = SummaryFormatter()

    # -- set-up ----------------------------------------------------------
    def _lock_outdir(self, run_id: str) -> str | None:
        """Rank 0: lock ``outdir`` for this run; the refusal if another live run holds it."""
        if self.outdir is None:
            return None  # the default outdir, {report_dir}/{run_id}, is this run's alone
        lock = OutdirLock(self.outdir, run_id)
        try:
            lock.acquire()
        except OutdirInUseError as exc:
            return str(exc)
        except OSError as exc:  # read-only outdir: finalize() reports it (docs/history.md)
            logger.warning("ezpz: cannot lock %s (%s); not checking for other runs", lock.path, exc)
            return None
        self._lock = lock
        weakref.finalize(self, lock.release)  # a History dropped unclosed frees outdir too
        return None

    def _lock_for_finalize(self, out: Path) -> OutdirLock | None:
        """Rank 0: lock a finalize() outdir other than the constructor's, for the call."""
        held = self._lock is not None and self._lock.held
        if held and out.resolve() == self._lock.outdir.resolve():  # type: ignore[union-attr]
            return None
        if not out.is_dir():
            return None  # no live run holds a directory that does not exist yet
        lock = OutdirLock(out, self.run_id)
        try:
            return lock.acquire()  # OutdirInUseError: another live run writes there
        except OSError:  # unwritable: the datasets stage raises the clear error
            return None

    def _after_end(self) -> bool:
        """``update()`` after close()/finalize(): warn once; True when nothing is recorded."""
        if self._closed:
            if "close" not in self._warned_ended:
                self._warned_ended.add("close")
                logger.warning(
                    "ezpz: update() after close(): nothing is recorded from now on "
                    "(the History is closed)"
                )
            return True
        if "finalize" not in self._warned_ended:
            self._warned_ended.add("finalize")
            logger.warning(
                "ezpz: update() after finalize(): recorded in history and the JSONL only; "
                "the backends were finished by finalize() and drop it. Call finalize() "
                "again to write the new rows to the datasets."
            )
        return False

    def _free_comm(self) -> None:
        if self._reducer is not None:
            self._reducer.close()
        self._release_comm()

    def _release_comm(self) -> None:
        """Free the communicator this History duplicated (if any)."""
        if self._owns_comm and self.comm is not None:
            try:
                self.comm.Free()
            except Exception:  # MPI already finalized at interpreter exit
                pass
            self.comm = None

    def _setup_comm(
        self,
        comm: Any | None,
        distributed_history: bool | None,
        extrema: Iterable[str],
        mpi: bool,
    ) -> None:
        self._owns_comm = False
        if comm is None and mpi:
            world = dist.get_comm()
            if world is not None and world.Get_size() > 1:
                from ezpz.history.timed_collectives import timed_dup

                # A private communicator: ezpz's messages never match the user's.
                # Polled under EZPZ_COLLECTIVE_TIMEOUT: a History constructed on
                # some ranks only raises CollectiveTimeoutError instead of hanging.
                comm = timed_dup(world, "History() communicator (Dup)")
                self._owns_comm = True
        self.comm = comm
        if comm is not None:
            self.rank, self.world_size = comm.Get_rank(), comm.Get_size()
        elif mpi:
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world_size = 0, 1
        from ezpz.history.reduce import Reducer, statistics_enabled

        # Statistics need a communicator with more than one rank to reduce over.
        self.distributed = comm is not None and statistics_enabled(
            distributed_history, comm.Get_size()
        )
        self._reducer = Reducer(comm, extrema=tuple(extrema)) if self.distributed else None

    def _build_tracker(self, tracker: Tracker | None, backends: str | Sequence[str] | None) -> Any:
        from ezpz.history.stopwatch import set_active_tracker
        from ezpz.tracker import resolve_tracker

        resolved = resolve_tracker(
            tracker=tracker,
            backends=backends,
            project_name=self.project_name,
            config=self.config or None,
            # File backends (csv) write where finalize() will put its outputs.
            outdir=self.run_info().default_outdir(),
            rank=self.rank,
            world_size=self.world_size,
            identity={"ezpz_run_id": self.run_id, **self._life.tracker_kwargs()},
        )
        set_active_tracker(resolved)
        return resolved

    def _build_rank_flusher(self) -> RankFlusher | None:
        """Every rank's raw values (ranks.h5) for runs on more than one rank."""
        if self.comm is None or self.world_size <= 1:
            return None
        from ezpz.history.ranks_h5 import RankFlusher

        return RankFlusher(self.run_info(), self.store, self.comm)

    def run_info(self, run_name: str | None = None) -> RunInfo:
        """This run's identity and places, frozen: what History hands its parts.

        ``run_name`` overrides ``History(run_name=...)`` for this record only.
        """
        return RunInfo(
            run_id=self.run_id,
            rank=self.rank,
            world_size=self.world_size,
            project_name=self.project_name,
            config=dict(self.config),
            report_dir=self.report_dir,
            outdir=self.outdir,
            jsonl_path=self.jsonl_path,
            run_name=run_name or self.run_name,
        )

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
        summarize: bool = True,
    ) -> str:
        """Record one step's metrics; returns the console summary line.

        ``summarize=False`` (ezpz 0.26) skips building the line and returns
        ``""``: the fastest path for loops that print rarely.

        normalize -> reduce -> store -> sinks (JSONL, tracker, ranks.h5) -> summary.
        """
        if use_wandb is not None:
            self._handle_use_wandb(use_wandb)
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise TypeError(f"update() takes a dict of metrics, got {type(metrics).__name__}")
        if self._ended and self._after_end():
            return ""
        if step is None:
            step = self._num_updates
        elif type(step) is not int or not STEP_MIN <= step <= STEP_MAX:
            step = as_step(step)  # an int64 step, or a clear error (docs/history.md, "Steps")
        self._num_updates += 1
        now = time.time()
        if self._life.supersede is not None and self._life.supersede.armed:
            self._life.before_update(step)  # a resumed run's first update only

        norm = self._normalize(metrics)
        flat, layout = self._reduce(norm, step)
        layout.append(flat, step, now)
        if norm.flat_input and self._reducer is None:
            # Same keys and values. The caller's dict itself: the sinks below read it
            # before update() returns, and the tracker queues its own snapshot.
            record = metrics if isinstance(metrics, dict) else dict(metrics)
        else:
            record = layout.record(flat)
        if norm.vectors:
            self._store_vectors(norm, layout, step, now, record)

        if self._jsonl is not None:
            self._jsonl.write(step, now, record)
        if self.rank == 0:
            self.tracker.log(record, step=step, commit=commit)
        if self._flush_after_update is not None:
            self._flush_after_update.after_update()
        if not summarize:
            return ""
        if norm.vectors:
            return self._summary.format(record, precision)
        # Without vectors every value of the record is a Python float or int, and
        # the record holds the layout's keys (or, unreduced, the caller's keys).
        keys = layout.full_keys if record is not metrics else norm.key_tuple
        return self._summary.format(record, precision, plain_numbers=True, keys=keys)

    def _reduce(self, norm: Normalized, step: int) -> tuple[list[float], Layout]:
        """The flat values to store (raw, then each statistic) and their layout."""
        raw_keys = norm.key_tuple or tuple(norm.scalar_keys)
        flat = norm.scalar_values
        if self._reducer is None:
            return flat, self._layouts.get(raw_keys)
        # The list itself: small layouts reduce on Python floats (Reducer._reduce_small).
        result = self._reducer.reduce(raw_keys, flat, step)
        layout = self._layouts.get(raw_keys, result.keys, result.suffixes)
        return flat + result.flat_values(), layout

    def _store_vectors(
        self, norm: Normalized, layout: Layout, step: int, now: float, record: dict[str, Any]
    ) -> None:
        """Vector metrics into the rows this step wrote, and into ``record``."""
        self.store.append_vectors(norm.vectors, layout.rows(), step, now)
        for key, values in norm.vectors:
            record[key] = values.tolist()

    def _handle_use_wandb(self, use_wandb: bool) -> None:
        """The deprecated ``update(use_wandb=...)``: maybe attach wandb (warns once)."""
        from ezpz.history.stopwatch import set_active_tracker
        from ezpz.tracker import handle_use_wandb

        self.tracker = handle_use_wandb(
            self.tracker,
            use_wandb,
            project_name=self.project_name,
            rank=self.rank,
            world_size=self.world_size,
        )
        set_active_tracker(self.tracker)
        self._life.use_tracker(self.tracker)  # a signal drains the tracker in use

    # -- end of run -------------------------------------------------------
    def finalize(
        self,
        outdir: str | os.PathLike[str] | None = None,
        run_name: str | None = None,
        warmup: float = 0.0,
        num_chains: int = 128,
        *,
        all_ranks: bool | None = None,
        plot: bool = True,
        report: bool | None = None,
        progress: bool = True,
        **kwargs: Any,
    ) -> xr.Dataset | dict[str, xr.Dataset]:
        """Write datasets, plots and the report; flush and close the backends.

        ``report`` defaults to ``History(report_enabled=...)``; the other
        arguments are those of :func:`ezpz.history.finalize.finalize`.
        """
        from ezpz.history.finalize import finalize, resolve_outdir

        run = self.run_info(run_name)
        # One live run per outdir: rank 0 refuses (OutdirInUseError) before any work.
        lock = self._lock_for_finalize(resolve_outdir(run, outdir)) if self.rank == 0 else None
        try:
            result = finalize(
                run,
                self.store,
                self.tracker,
                ranks=self._rank_flusher,
                outdir=outdir,
                warmup=warmup,
                num_chains=num_chains,
                all_ranks=all_ranks,
                plot=plot,
                report=self.report_enabled if report is None else report,
                progress=progress,
                **kwargs,
            )
        finally:
            if lock is not None:
                lock.release()
        self._ended = True  # the backends are finished: a later update() says so
        self._life.finalized()  # the "finalized" event; signal handlers restored
        if self._lock is not None:
            self._lock.release()
        return result

    def close(self) -> None:
        """Close the JSONL file and free ezpz's communicator (not the backends)."""
        if self._closed:
            return
        self._closed = True
        self._ended = True
        self._life.close()
        if self._lock is not None:
            self._lock.release()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._reducer is not None:
            self._reducer.close()
        if self._rank_flusher is not None:
            self._rank_flusher.close()
        self._release_comm()

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
        """Rebuild a History (single-process, no MPI, no backends) from a JSONL log.

        Its ``history`` equals the one of the run that wrote the file, NaN and
        ±inf included. Torn lines of a killed run are skipped with a warning.
        See :mod:`ezpz.history.rebuild`.
        """
        from ezpz.history import rebuild

        path = Path(path)
        hist = cls(
            distributed_history=False,
            report_dir=report_dir if report_dir is not None else path.parent,
            backends="none",
            config=config,
            jsonl_enabled=False,
            jsonl_path=path,
            mpi=False,
        )
        hist.run_id = path.stem
        hist._num_updates = rebuild.replay(path, hist.store)
        return hist
