"""Delivery lanes: one bounded queue and one worker thread per backend.

``Lane.put_log`` is the hot path of every training step: it appends a tuple
to a ``deque`` — no lock, no condition variable, and no wake-up of the
worker. An idle worker polls every ``POLL_INTERVAL`` seconds instead: waking
a thread from inside ``update()`` lets the OS preempt the training thread
right there (on a busy node it then waits behind other runnable tasks for a
whole time slice), while a timer wake-up almost never lands inside the few
microseconds of an ``update()``. Polling also batches the work of several
steps into one wake-up. Rare calls (config, tables, finish, flush) do wake
the worker at once, and so does a burst that half-fills the queue. The worker calls the backend, so a backend that is slow,
hangs or raises never touches the training thread, and a hung backend never
delays the other backends (each has its own lane).

Queue-full policy: metric calls (``log``) live in a ``deque(maxlen=capacity)``;
when it is full the *oldest* queued metric call is dropped and counted (the
JSONL on disk always has every step). Other calls (config, tables, images,
artifacts, outdir changes, finish) are rare and never dropped. Calls reach
the backend in the order they were made.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ezpz._redact import protect_logger
from ezpz.tracker.base import TrackerBackend

logger = logging.getLogger(__name__)
protect_logger(logger)  # URL credentials and tokens never reach the log

_LOG = "log"
_FINISH = "finish"
_BARRIER = "_barrier"  # internal: lets flush() wait until earlier calls are done

# How often an idle worker looks for queued metrics (seconds): delivery latency, not throughput.
POLL_INTERVAL = 0.05


@dataclass
class LaneReport:
    """What one backend received, by the time ``finish()`` returned."""

    name: str
    logs_enqueued: int = 0  # metric calls accepted by Tracker.log
    logs_delivered: int = 0  # metric calls the backend was given (raised or not)
    logs_dropped: int = 0  # oldest metric calls dropped because the queue was full
    undelivered: int = 0  # calls still queued or in flight at the deadline
    failures: dict[str, int] = field(default_factory=dict)  # "log: ValueError" -> count
    timed_out: bool = False  # finish() did not complete before the deadline

    @property
    def ok(self) -> bool:
        return not (self.logs_dropped or self.undelivered or self.failures or self.timed_out)


@dataclass
class FinishReport:
    """Returned by ``Tracker.finish()``: what could not be delivered, per backend."""

    backends: dict[str, LaneReport] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every call reached every backend without error."""
        return all(r.ok for r in self.backends.values())

    @property
    def undelivered(self) -> dict[str, int]:
        """Backend -> calls never delivered (dropped when the queue was full + left at the deadline)."""
        return {
            name: r.logs_dropped + r.undelivered
            for name, r in self.backends.items()
            if r.logs_dropped or r.undelivered
        }

    @property
    def timed_out(self) -> list[str]:
        return [name for name, r in self.backends.items() if r.timed_out]

    def __str__(self) -> str:
        if not self.backends:
            return "no tracker backends"
        parts = []
        for name, r in self.backends.items():
            text = f"{name}: {r.logs_delivered}/{r.logs_enqueued} metric calls delivered"
            if r.logs_dropped:
                text += f", {r.logs_dropped} dropped (queue full)"
            if r.undelivered:
                text += f", {r.undelivered} calls undelivered"
            if r.timed_out:
                text += ", finish timed out"
            if r.failures:
                text += ", failures: " + ", ".join(f"{k} x{n}" for k, n in r.failures.items())
            parts.append(text)
        return "; ".join(parts)


class Lane:
    """Delivers one backend's calls, in order, on its own daemon thread."""

    def __init__(self, name: str, backend: TrackerBackend, capacity: int) -> None:
        self.name = name
        self.backend = backend
        self.capacity = max(1, int(capacity))
        self._wake_at = max(1, self.capacity // 2)
        # metric calls: (seq, metrics, step, commit); other calls: (seq, method, args, kwargs)
        self._logs: deque[tuple[int, Any, Any, Any]] = deque(maxlen=self.capacity)
        self._calls: deque[tuple[int, Any, Any, Any]] = deque()
        self._seq = itertools.count()
        self._bell: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._idle = False
        self._held: tuple[int, Any, Any, Any] | None = None
        self._busy: tuple[int, Any, Any, Any] | None = None
        self._accepting = True
        self._abandoned = False
        self._warned_full = False
        self.logs_enqueued = 0
        self.logs_delivered = 0
        self.failures: dict[str, int] = {}
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ezpz-tracker-{name}", daemon=True)
        self._thread.start()

    # -- producer side (training thread) -----------------------------------
    def put_log(self, metrics: Mapping[str, Any], step: int | None, commit: bool) -> None:
        if not self._accepting:
            return
        logs = self._logs
        if len(logs) == self.capacity and not self._warned_full:
            self._warn_full()
        logs.append((next(self._seq), metrics, step, commit))
        self.logs_enqueued += 1
        # Normally no wake-up here (see the module docstring); a burst of updates
        # that half-fills the queue before the next poll wakes the worker early.
        if self._idle and len(logs) >= self._wake_at:
            self._idle = False
            self._bell.put(None)

    def _warn_full(self) -> None:
        self._warned_full = True
        logger.warning(
            "tracker backend %r is %d calls behind; dropping its oldest queued metrics "
            "(the JSONL keeps every step; counts are in finish()'s report)",
            self.name,
            self.capacity,
        )

    def put_call(self, method: str, *args: Any, **kwargs: Any) -> bool:
        """Queue a non-metric call; False when the lane no longer accepts calls."""
        if not self._accepting:
            return False
        self._put_call(method, args, kwargs)
        return True

    def _put_call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._calls.append((next(self._seq), method, args, kwargs))
        if self._idle:
            self._idle = False
            self._bell.put(None)

    def barrier(self) -> threading.Event:
        """An event set once every call queued before it has been delivered."""
        done = threading.Event()
        if self.finished.is_set() or self._abandoned:
            done.set()
        else:
            self._put_call(_BARRIER, (done,), {})
        return done

    def close(self) -> None:
        """Stop accepting calls and queue the backend's ``finish()`` last."""
        if self._accepting:
            self._accepting = False
            self._put_call(_FINISH, (), {})

    def abandon(self) -> None:
        """Give up on this lane (deadline passed): deliver nothing more."""
        self._abandoned = True
        self._bell.put(None)

    # -- consumer side (worker thread) ---------------------------------------
    def _pop(self) -> tuple[int, Any, Any, Any] | None:
        item = self._held
        self._held = None
        if item is None:
            try:
                item = self._logs.popleft()
            except IndexError:
                item = None
        calls = self._calls
        if calls and (item is None or calls[0][0] < item[0]):
            self._held = item  # a call queued before this metric goes first
            return calls.popleft()
        return item

    def _next(self) -> tuple[int, Any, Any, Any]:
        while True:
            item = self._pop()
            if item is not None:
                return item
            self._idle = True
            item = self._pop()  # re-check: a call may have been queued before _idle was set
            if item is not None:
                self._idle = False
                return item
            try:
                self._bell.get(timeout=POLL_INTERVAL)
            except queue.Empty:
                pass
            self._idle = False

    def _run(self) -> None:
        try:
            while not self._abandoned:
                item = self._next()
                if self._abandoned:
                    break
                is_log = not isinstance(item[1], str)
                method = _LOG if is_log else item[1]
                if method == _BARRIER:
                    item[2][0].set()
                    continue
                self._busy = item
                try:
                    if is_log:
                        # Each backend gets its own copy: one cannot alter what another sees.
                        self.backend.log(dict(item[1]), step=item[2], commit=item[3])
                    else:
                        getattr(self.backend, method)(*item[2], **item[3])
                except BaseException as exc:  # a worker thread: nothing must escape
                    self._record_failure(method, exc)
                finally:
                    self._busy = None
                    if is_log:
                        self.logs_delivered += 1
                if method == _FINISH:
                    break
        finally:
            self.finished.set()

    def _record_failure(self, method: str, exc: BaseException) -> None:
        kind = f"{method}: {type(exc).__name__}"
        count = self.failures.get(kind, 0) + 1
        self.failures[kind] = count
        if count == 1:  # once per kind of failure, not once per step
            logger.warning(
                "tracker backend %r failed in %s(): %s: %s; the other backends still get "
                "every call, and further %r failures are counted, not logged",
                self.name,
                method,
                type(exc).__name__,
                exc,
                kind,
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    # -- reporting ---------------------------------------------------------
    def report(self) -> LaneReport:
        # Clean: the backend's finish() ran. Abandoned lanes keep what they never delivered.
        clean = self.finished.is_set() and not self._abandoned
        in_flight = [item for item in (self._held, self._busy) if item is not None]
        pending_logs = pending = 0
        if not clean:
            pending_logs = len(self._logs) + sum(not isinstance(i[1], str) for i in in_flight)
            pending = (
                len(self._logs) + sum(1 for c in self._calls if c[1] != _BARRIER) + len(in_flight)
            )
        dropped = max(0, self.logs_enqueued - self.logs_delivered - pending_logs)
        return LaneReport(
            name=self.name,
            logs_enqueued=self.logs_enqueued,
            logs_delivered=self.logs_delivered,
            logs_dropped=dropped,
            undelivered=pending,
            failures=dict(self.failures),
            timed_out=not clean,
        )
