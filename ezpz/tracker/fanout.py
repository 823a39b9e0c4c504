"""``Tracker``: fans every call out to all backends, without blocking the caller."""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ezpz._env import env_float, env_int
from ezpz._redact import protect_logger, redact_config
from ezpz.tracker.base import TrackerBackend
from ezpz.tracker.dispatch import FinishReport, Lane

logger = logging.getLogger(__name__)
protect_logger(logger)  # URL credentials and tokens never reach the log

DEFAULT_QUEUE_SIZE = 1024
DEFAULT_FINISH_TIMEOUT = 60.0


class Tracker:
    """Sends metrics, config, tables and images to every backend it holds.

    Each backend gets its own bounded queue and worker thread
    (:mod:`ezpz.tracker.dispatch`): ``log()`` only enqueues, so a slow, hung
    or failing backend never stalls the training step, and never keeps the
    other backends from getting their calls. ``finish()`` drains the queues
    with a deadline and returns a :class:`FinishReport`.
    """

    _use_wandb_handled = False  # set by handle_use_wandb (deprecated update(use_wandb=))

    def __init__(
        self,
        backends: Iterable[TrackerBackend] = (),
        *,
        queue_size: int | None = None,
        finish_timeout: float | None = None,
        requested: Sequence[str] = (),
    ) -> None:
        self.queue_size = (
            int(queue_size)
            if queue_size is not None
            else env_int("EZPZ_TRACKER_QUEUE_SIZE", DEFAULT_QUEUE_SIZE, minimum=1)
        )
        self.finish_timeout = (
            float(finish_timeout)
            if finish_timeout is not None
            else env_float("EZPZ_TRACKER_FINISH_TIMEOUT", DEFAULT_FINISH_TIMEOUT, minimum=0.001)
        )
        # Names asked for, including those not built here (other ranks, failed starts).
        self.requested: tuple[str, ...] = tuple(requested)
        self._lanes: list[Lane] = []
        self._report: FinishReport | None = None
        self._atexit_registered = False
        for backend in backends:
            self.add_backend(backend)

    # -- backends ----------------------------------------------------------
    def add_backend(self, backend: TrackerBackend, name: str | None = None) -> None:
        """Start delivering to ``backend`` too (under ``name``, default ``backend.name``)."""
        if not isinstance(backend, TrackerBackend):
            raise TypeError(f"expected a TrackerBackend, got {type(backend).__name__}")
        if self._report is not None:
            raise RuntimeError("this Tracker is finished; it takes no new backends")
        lane_name = name or getattr(backend, "name", None) or type(backend).__name__
        if any(lane.name == lane_name for lane in self._lanes):
            raise ValueError(f"a backend named {lane_name!r} is already attached")
        self._lanes.append(Lane(lane_name, backend, self.queue_size))
        if not self._atexit_registered:
            self._atexit_registered = True
            _finish_at_exit(self)

    @property
    def backends(self) -> tuple[TrackerBackend, ...]:
        """The backend objects, in the order they were attached."""
        return tuple(lane.backend for lane in self._lanes)

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(lane.name for lane in self._lanes)

    def get_backend(self, name: str) -> TrackerBackend | None:
        """The backend attached as ``name`` (e.g. ``"wandb"``), or None."""
        key = name.strip().lower()
        for lane in self._lanes:
            if lane.name.lower() == key:
                return lane.backend
        return None

    @property
    def wandb_run(self) -> Any | None:
        """The ``wandb.Run`` of the wandb backend, or None (no backend, other ranks)."""
        backend = self.get_backend("wandb")
        return getattr(backend, "run", None) if backend is not None else None

    def __len__(self) -> int:
        return len(self._lanes)

    def __bool__(self) -> bool:  # a Tracker object is truthy even with no backends
        return True

    # -- the calls ---------------------------------------------------------
    def log(self, metrics: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """Queue ``metrics`` for every backend; returns at once (the hot path)."""
        lanes = self._lanes
        if lanes:
            snapshot = dict(metrics)  # the caller may reuse its dict
            for lane in lanes:
                lane.put_log(snapshot, step, commit)

    def _fan_out(self, method: str, *args: Any, **kwargs: Any) -> None:
        for lane in self._lanes:
            lane.put_call(method, *args, **kwargs)

    def log_config(self, config: Mapping[str, Any]) -> None:
        # every backend, custom ones included, gets secrets redacted (ezpz._redact)
        self._fan_out("log_config", redact_config(dict(config)))

    def log_table(
        self,
        key: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]] | None = None,
        *,
        data: Sequence[Sequence[Any]] | None = None,
    ) -> None:
        """A table: ``columns`` and its rows (``data=`` is ezpz 0.26's name for ``rows``)."""
        if data is not None:
            if rows is not None:
                raise TypeError("log_table() takes rows or data=, not both")
            rows = data
        if rows is None:
            raise TypeError("log_table() needs the table's rows (rows or data=)")
        self._fan_out("log_table", key, list(columns), [list(row) for row in rows])

    def log_image(self, key: str, path: str | os.PathLike[str], caption: str | None = None) -> None:
        self._fan_out("log_image", key, os.fspath(path), caption)

    def log_artifact(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self._fan_out("log_artifact", os.fspath(path), name)

    def watch(self, model: Any, **kwargs: Any) -> None:
        self._fan_out("watch", model, **kwargs)

    def set_outdir(self, outdir: str | os.PathLike[str]) -> None:
        """Redirect file backends (csv) to ``outdir``; ordered after earlier calls."""
        self._fan_out("set_outdir", os.fspath(outdir))

    def supersede(self, step: int) -> None:
        """A resumed run logs ``step`` again: each backend replaces or skips its rows from
        ``step`` on (see :meth:`TrackerBackend.supersede`); ordered after earlier calls."""
        self._fan_out("supersede", step)

    # -- draining ------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call made so far was delivered; False at the deadline."""
        deadline = time.monotonic() + (self.finish_timeout if timeout is None else timeout)
        events = [lane.barrier() for lane in self._lanes]
        return all(ev.wait(max(0.0, deadline - time.monotonic())) for ev in events)

    def finish(self, timeout: float | None = None) -> FinishReport:
        """Deliver what is queued, call each backend's ``finish()``, within ``timeout`` s.

        Backends drain in parallel; one that has not finished by the deadline
        is abandoned (its thread is a daemon and never blocks interpreter
        exit). Idempotent: later calls return the first report.
        """
        if self._report is not None:
            return self._report
        deadline = time.monotonic() + (self.finish_timeout if timeout is None else timeout)
        for lane in self._lanes:
            lane.close()
        for lane in self._lanes:
            lane.finished.wait(max(0.0, deadline - time.monotonic()))
        for lane in self._lanes:
            if not lane.finished.is_set():
                lane.abandon()
        report = FinishReport({lane.name: lane.report() for lane in self._lanes})
        self._report = report
        if not report.ok:
            logger.warning("tracker finish: %s", report)
        return report

    def interrupt(self, timeout: float | None = None) -> FinishReport:
        """Shutdown on a signal: mark every backend interrupted, then :meth:`finish`."""
        if self._report is None:
            self._fan_out("mark_interrupted")
        return self.finish(timeout=timeout)

    @property
    def finished(self) -> bool:
        return self._report is not None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backends={list(self.backend_names)!r})"


def _finish_at_exit(tracker: Tracker) -> None:
    """Drain a tracker nobody finished when the interpreter exits.

    Registered when the first backend is attached, i.e. after the backend's
    own atexit hooks (wandb's), so it runs before them. It holds the tracker:
    its worker threads hold the backends anyway, and queued metrics of a
    tracker the program dropped should still be delivered.
    """

    def _at_exit() -> None:
        if not tracker.finished:
            tracker.finish()

    atexit.register(_at_exit)
