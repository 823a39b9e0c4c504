"""StopWatch: time a block or a function, log it, and send it to the active tracker.

``with StopWatch("forward pass", wbtag="timing/forward", iter=step): ...``

The *active tracker* is the tracker of the most recently constructed
``History`` on this process (``History`` calls :func:`set_active_tracker`).
It is held through a weak reference, so a StopWatch never keeps a finished
History's tracker alive.
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["StopWatch", "get_active_tracker", "set_active_tracker"]

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

# A weakref.ref to the tracker, or (for objects that refuse weak references)
# a zero-argument callable returning it.
_active: Callable[[], Any] | None = None


def set_active_tracker(tracker: Any | None) -> None:
    """Make ``tracker`` the one StopWatch reports to (``None`` clears it).

    ``History`` calls this when it is constructed; call it yourself to route
    timings to another object with ``log(metrics, step=None, commit=True)``.
    """
    global _active
    if tracker is None:
        _active = None
        return
    try:
        _active = weakref.ref(tracker)
    except TypeError:  # e.g. a class with __slots__ and no __weakref__
        _active = lambda: tracker  # noqa: E731 - a strong reference is the fallback
    logger.debug("StopWatch reports to %r", tracker)


def get_active_tracker() -> Any | None:
    """The active tracker, or None when there is none (or it was collected)."""
    ref = _active
    return None if ref is None else ref()


class StopWatch:
    """Time a block with ``time.perf_counter``; log it, optionally track it.

    Args:
        msg: what is timed; the log line reads ``"<msg> took 0.012345 s"``.
        wbtag: metric key for the active tracker (e.g. ``"timing/forward"``);
            ``None`` logs only.
        iter: the step passed to ``tracker.log`` (``None``: the tracker's own step).
        commit: passed to ``tracker.log``; ``False`` (default) lets W&B merge
            the timing into the step's next committed row.
        prefix: ezpz 0.26's W&B key for the nested ``data`` dict; kept as
            ``.prefix`` for code that reads it. The tracker gets the flat key
            ``wbtag`` instead (JSONL, csv and MLflow cannot hold a nested dict);
            see ``docs/migrating.md``.
        log_output: ``False`` skips the log line (the tracker still gets it).
        level: logging level of the line (default ``logging.INFO``).

    After the block, ``elapsed`` holds the seconds and, with ``wbtag``,
    ``data`` is ``{"<wbtag>/dt": seconds, "<wbtag>/iter": iter}`` (the
    ``/iter`` entry only when ``iter`` is given; ``/dt`` is None until the
    block ends), as ezpz 0.26 filled it. As a decorator
    (``@StopWatch("step")``) every call is timed on its own, so recursion
    and threads are safe. An exception inside the block propagates; its
    time is logged (marked as failed) but not sent to the tracker.
    """

    def __init__(
        self,
        msg: str,
        wbtag: str | None = None,
        iter: int | None = None,  # the documented keyword (shadows the builtin)
        commit: bool = False,
        prefix: str = "StopWatch/",
        log_output: bool = True,
        *,
        level: int = logging.INFO,
    ) -> None:
        self.msg = msg
        self.prefix = prefix
        self.data: dict[str, Any] = {}
        if wbtag is not None:
            self.data[f"{wbtag}/dt"] = None
            if iter is not None:
                self.data[f"{wbtag}/iter"] = iter
        self.wbtag = wbtag
        self.iter = iter
        self.commit = commit
        self.log_output = log_output
        self.level = level
        self.start: float | None = None
        self.elapsed: float | None = None

    def __enter__(self) -> StopWatch:
        self.elapsed = None
        self.start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.start is None:  # __exit__ without __enter__: nothing was timed
            return
        elapsed = self.elapsed = time.perf_counter() - self.start
        failed = exc_type is not None
        if self.wbtag is not None and not failed:
            self.data[f"{self.wbtag}/dt"] = elapsed
        if self.log_output:
            if exc_type is not None:
                logger.log(
                    self.level, "%s took %.6f s (raised %s)", self.msg, elapsed, exc_type.__name__
                )
            else:
                logger.log(self.level, "%s took %.6f s", self.msg, elapsed)
        if self.wbtag and not failed:
            self._track(elapsed)

    def _track(self, elapsed: float) -> None:
        tracker = get_active_tracker()
        if tracker is None:
            return
        try:
            tracker.log({self.wbtag: elapsed}, step=self.iter, commit=self.commit)
        except Exception as err:  # a tracker problem never breaks the timed code
            logger.warning("StopWatch %r: tracker.log failed: %s", self.msg, err)

    def __call__(self, func: _F) -> _F:
        """Decorator: time each call of ``func`` with a fresh StopWatch."""

        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            watch = StopWatch(
                self.msg,
                wbtag=self.wbtag,
                iter=self.iter,
                commit=self.commit,
                prefix=self.prefix,
                log_output=self.log_output,
                level=self.level,
            )
            try:
                with watch:
                    return func(*args, **kwargs)
            finally:
                self.elapsed = watch.elapsed  # the latest call, for inspection
                self.data = watch.data

        return timed  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"StopWatch({self.msg!r}, wbtag={self.wbtag!r}, elapsed={self.elapsed!r})"
