"""A run's life: start (new or resumed), signal, finalize, close.

``History`` owns one :class:`Lifecycle` and calls it at fixed points:

* construction: :func:`Lifecycle.decide` (collective: rank 0 picks the run to
  resume and broadcasts it), then :meth:`reload` (the resumed store),
  :meth:`prepare_files` (torn JSONL tail, the csv), :meth:`begin` (ranks.h5
  staging merge, the ``start`` event, signal handlers);
* ``update(use_wandb=True)`` replaced the tracker: :meth:`use_tracker`;
* every update: :meth:`before_update` while the superseding rule is armed
  (only the first update of a resumed run);
* the end: :meth:`finalized` (the ``finalized`` event) and :meth:`close`
  (handlers restored).

On SIGTERM/SIGUSR1/SIGUSR2/SIGINT, :meth:`_on_signal` saves the run without
any collective (see :mod:`ezpz.history.signals`) and the previous handler
takes over. Ranks other than 0 wait (up to the grace period) for rank 0 to
finish draining before they hand over, because ``mpiexec`` tears the whole
job down as soon as one rank dies of a signal.

``Lifecycle`` never sees ``History``: :meth:`begin` gets the parts it works
with (:class:`LifecycleParts`: the run's :class:`~ezpz.history.runinfo.RunInfo`,
the store, the communicator, the tracker, the JSONL writer, the per-rank
flusher, the reducer), built and owned by ``History``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ezpz.history import resume as _resume
from ezpz.history.signals import SignalGuard, shutdown_grace, signal_name, signals_wanted

if TYPE_CHECKING:
    from ezpz.history.jsonl import JsonlWriter
    from ezpz.history.ranks_h5 import RankFlusher
    from ezpz.history.reduce import Reducer
    from ezpz.history.runinfo import RunInfo
    from ezpz.history.store import HistoryStore
    from ezpz.tracker import Tracker

logger = logging.getLogger(__name__)

_TAG_DONE = 0x5EA9  # rank 0 -> others: "drained, you may go"
_POLL_S = 0.005


@dataclass(frozen=True)
class LifecycleParts:
    """What :class:`Lifecycle` works with after construction; ``History`` builds it.

    ``jsonl`` is None off rank 0 (or with ``jsonl_enabled=False``), ``flusher``
    for single-process runs, ``reducer`` when statistics are off.
    """

    run: RunInfo
    store: HistoryStore
    comm: Any | None
    tracker: Tracker
    jsonl: JsonlWriter | None = None
    flusher: RankFlusher | None = None
    reducer: Reducer | None = None


class Lifecycle:
    """Start, resume, signal and finalize of one History (see the module doc)."""

    def __init__(
        self,
        *,
        resume: bool | str | os.PathLike[str] | None,
        handle_signals: bool | None,
        run_name: str | None,
        report_dir: str | os.PathLike[str],
        jsonl_path: str | os.PathLike[str] | None,
        comm: Any | None,
        rank: int,
    ) -> None:
        self.rank = rank
        self.run_name = _resume.run_name_wanted(run_name)
        self.handle_signals = signals_wanted(handle_signals)
        self.target = _resume.decide(resume, report_dir, jsonl_path, comm, rank)
        if comm is not None:  # every rank waits the same way (see begin)
            self.handle_signals = bool(comm.bcast(self.handle_signals, root=0))
        self.loaded: _resume.LoadedRun | None = None
        self.last_step: int | None = None
        self.records = 0
        self.supersede: _resume.Supersede | None = None
        self.guard: SignalGuard | None = None
        self.interrupted: str | None = None
        self._parts: LifecycleParts | None = None
        self._ranks_state: Any = None

    @property
    def resumed(self) -> bool:
        return self.target is not None

    @property
    def run_id(self) -> str | None:
        return self.target[0] if self.target else None

    @property
    def jsonl_path(self) -> Path | None:
        return self.target[1] if self.target else None

    # -- construction ------------------------------------------------------------
    def reload(self, store: Any, comm: Any | None, rank: int) -> int:
        """Rebuild the recorded history into ``store`` on every rank; returns the next step.

        Rank 0 reads the JSONL and broadcasts the rows (the file need not be
        visible to other nodes).
        """
        if self.target is None:
            return 0
        payload = None
        if rank == 0:
            self.loaded = _resume.load_run(self.target[1])
            payload = _resume.portable(self.loaded)
        if comm is not None:
            payload = comm.bcast(payload, root=0)
        assert payload is not None
        _resume.fill_store(store, payload["groups"])
        self.records = int(payload["records"])
        self.last_step = payload["last_step"]
        self.supersede = _resume.Supersede(self.last_step)
        if rank == 0:
            logger.info(
                "ezpz: resuming run %s from %s (%d records, last step %s)",
                self.target[0],
                self.target[1],
                self.records,
                self.last_step,
            )
        return (self.last_step + 1) if self.last_step is not None else 0

    def prepare_files(self, csv_dir: Path | None, config: Any) -> None:
        """Rank 0, before the JSONL writer and the tracker open their files."""
        if self.target is None or self.rank != 0 or self.loaded is None:
            return
        path = self.target[1]
        cut = _resume.cut_torn_tail(path)
        if cut:
            logger.warning("ezpz: cut a torn last line (%d bytes) from %s", cut, path)
        if config is not None and self.loaded.config is not None:
            from ezpz._redact import redact_config

            differ = _resume.config_diff(self.loaded.config, redact_config(dict(config)))
            if differ:
                logger.warning(
                    "ezpz: the resumed run %s was started with another config; differing keys: "
                    "%s (both are recorded in the JSONL's start events)",
                    self.target[0],
                    ", ".join(differ),
                )
        if csv_dir is not None:
            from ezpz.tracker.csv_resume import repair

            metrics = Path(csv_dir) / "metrics.csv"
            if metrics.exists():
                added, removed = repair(metrics, self.loaded)
                if added or removed:
                    logger.info(
                        "ezpz: %s: restored %d rows from the JSONL, removed %d rows not in it",
                        metrics,
                        added,
                        removed,
                    )

    def tracker_kwargs(self) -> dict[str, Any]:
        """What backends need to know about the run's identity (see resolve_tracker)."""
        return {"run_name": self.run_name, "resumed": self.resumed, "resume_step": self.last_step}

    def begin(self, parts: LifecycleParts) -> None:
        """After the store, JSONL, tracker and ranks flusher exist: start event, handlers."""
        self._parts = parts
        run, flusher, jsonl = parts.run, parts.flusher, parts.jsonl
        if self.target is not None and flusher is not None:
            self._continue_ranks(parts, flusher)
        if jsonl is not None:
            from ezpz._redact import redact_config

            jsonl.write_event(
                _resume.START,
                time.time(),
                run_id=run.run_id,
                world_size=run.world_size,
                job_id=_resume.job_id(),
                run_name=self.run_name,
                resumed=self.resumed,
                config=redact_config(dict(run.config)) if run.config else None,
            )
        if self.loaded is not None and self.loaded.world_size not in (None, run.world_size):
            logger.warning(
                "ezpz: run %s resumed at %d ranks (it ran at %d): statistics of each step "
                "are over the ranks that ran it",
                run.run_id,
                run.world_size,
                self.loaded.world_size,
            )
        if self.handle_signals:
            self.guard = SignalGuard(self._on_signal)
            if self.guard.install() and flusher is not None:
                # Periodic per-rank flushes are collective: a signal waits until they end.
                flush = flusher.flush
                guard = self.guard

                def deferred_flush(*, final: bool) -> None:
                    with guard.deferring():
                        flush(final=final)

                flusher.flush = deferred_flush  # type: ignore[method-assign]
            if parts.reducer is not None:
                # A rank blocked inside MPI cannot run its handler: poll instead.
                parts.reducer.make_interruptible()

    def use_tracker(self, tracker: Tracker) -> None:
        """``History`` replaced its tracker (``update(use_wandb=True)``): use that one."""
        if self._parts is not None:
            self._parts = replace(self._parts, tracker=tracker)

    def _continue_ranks(self, parts: LifecycleParts, flusher: RankFlusher) -> None:
        """Merge saved per-rank values into the staging file; continue flushing there."""
        from ezpz.history import ranks_partial

        run = parts.run
        state = None
        if run.rank == 0:
            keep = {name: len(g) for name, g in parts.store.groups.items()}
            try:
                state = ranks_partial.merge_partials(
                    run.report_dir, run.run_id, run.world_size, keep
                )
            except Exception:
                logger.exception("ezpz: merging the saved per-rank values failed")
                state = ranks_partial.RanksState()
        if parts.comm is not None:
            state = parts.comm.bcast(state, root=0)
        if state is not None:
            ranks_partial.continue_flusher(flusher, state, run.rank, parts.store)
        self._ranks_state = state

    # -- every update (only while armed) ----------------------------------------------
    def before_update(self, step: int) -> None:
        """The superseding rule at the first update of a resumed run."""
        sup = self.supersede
        parts = self._parts
        if sup is None or not sup.armed or parts is None:
            return
        if not sup.check(step):
            return
        kept = _resume.truncate_store(parts.store, step)
        if parts.run.rank == 0:
            logger.warning(
                "ezpz: step %d was recorded before (last step %s): the new values supersede "
                "the recorded ones from step %d on",
                step,
                sup.last_step,
                step,
            )
            parts.tracker.supersede(step)
        flusher = parts.flusher
        if flusher is not None:
            for gname, n in kept.items():
                if gname in flusher.flushed:
                    flusher.flushed[gname] = min(flusher.flushed[gname], n)

    # -- the end -----------------------------------------------------------------------
    def finalized(self) -> None:
        jsonl = self._parts.jsonl if self._parts is not None else None
        if jsonl is not None:
            jsonl.write_event(_resume.FINALIZED, time.time())
            jsonl.sync()
        self.close()

    def close(self) -> None:
        if self.guard is not None:
            self.guard.restore()
            self.guard = None

    # -- the signal --------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        parts = self._parts
        if parts is None:
            return
        run = parts.run
        deadline = time.monotonic() + shutdown_grace()
        name = signal_name(signum)
        self.interrupted = name
        jsonl = parts.jsonl
        if jsonl is not None:
            jsonl.write_event(_resume.INTERRUPTED, time.time(), signal=name)
            jsonl.sync()
        flusher = parts.flusher
        if flusher is not None:
            try:
                from ezpz.history import ranks_partial

                ranks_partial.save_partial(
                    run.report_dir, run.run_id, run.rank, parts.store, flusher.flushed
                )
            except Exception:
                logger.exception("ezpz: could not save this rank's per-rank values")
        if run.rank == 0:
            tracker = parts.tracker
            left = max(0.0, deadline - time.monotonic())
            try:
                if signum == signal.SIGINT:
                    # KeyboardInterrupt may be caught and the run go on: deliver
                    # what is queued, keep the backends open (exit finishes them).
                    done = tracker.flush(timeout=left)
                    logger.warning(
                        "ezpz: SIGINT: run %s saved (backends %s)",
                        run.run_id,
                        "drained" if done else f"not drained within {left:.0f}s",
                    )
                else:
                    report = tracker.interrupt(left)
                    logger.warning("ezpz: %s: run %s saved (%s)", name, run.run_id, report)
            except Exception:
                logger.exception("ezpz: draining the backends on %s failed", name)
            if jsonl is not None:
                jsonl.sync()
        _handshake(parts.comm, run.rank, deadline)


def _handshake(comm: Any | None, rank: int, deadline: float) -> None:
    """Rank 0 tells the others it is done; they wait for that, at most until ``deadline``.

    Point-to-point only (a signal handler must not enter a collective).
    """
    if comm is None:
        return
    try:
        size = comm.Get_size()
    except Exception:
        return
    if size <= 1:
        return
    import numpy as np
    from mpi4py import MPI

    try:
        if rank == 0:
            buf = np.ones(1, dtype=np.int64)
            reqs = [comm.Isend([buf, MPI.INT64_T], dest=r, tag=_TAG_DONE) for r in range(1, size)]
            until = min(deadline, time.monotonic() + 2.0)
            while not MPI.Request.Testall(reqs) and time.monotonic() < until:
                time.sleep(_POLL_S)
            return
        buf = np.zeros(1, dtype=np.int64)
        req = comm.Irecv([buf, MPI.INT64_T], source=0, tag=_TAG_DONE)
        while not req.Test():
            if time.monotonic() >= deadline:
                req.Cancel()
                return
            time.sleep(_POLL_S)
    except Exception:  # MPI finalized or broken: nothing left to wait for
        return
