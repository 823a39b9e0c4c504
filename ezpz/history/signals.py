"""Chained signal handlers that save a run before the process goes away.

Slurm and PBS end a job with SIGTERM (at walltime, on preemption or
``scancel``), then SIGKILL after a grace period (Slurm's ``KillWait``,
30 s by default). ``sbatch --signal=B:USR1@120`` and PBS ``kill_delay``
set-ups send SIGUSR1/SIGUSR2 ahead of time. :class:`SignalGuard` installs
one handler for SIGTERM, SIGUSR1, SIGUSR2 and SIGINT that

1. runs a shutdown callback once (History's: fsync the JSONL, save this
   rank's unsaved per-rank values, drain the backends within
   ``EZPZ_SHUTDOWN_GRACE`` seconds, write the ``interrupted`` event), then
2. hands the signal to the handler that was installed before (the user's,
   torch's, Python's): Python's default SIGINT handler raises
   KeyboardInterrupt as usual; an ignored signal stays ignored; a signal
   whose previous disposition was the OS default (SIGTERM, SIGUSR1,
   SIGUSR2) is re-raised with the default disposition restored, so the
   process ends the way it would have without ezpz (SIGTERM: status 143).

Handlers can only be installed from the main thread; elsewhere the guard
does nothing (and says so at debug level). :meth:`SignalGuard.restore` puts
the previous handlers back, unless someone replaced ezpz's handler since.
The callback must not call an MPI collective: other ranks may be anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

from ezpz._env import env_flag, env_float

logger = logging.getLogger(__name__)

HANDLE_ENV = "EZPZ_HANDLE_SIGNALS"
GRACE_ENV = "EZPZ_SHUTDOWN_GRACE"
DEFAULT_GRACE_S = 20.0

#: the signals History handles (SIGUSR1/2 only where the platform has them)
HANDLED_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")
    if hasattr(signal, name)
)

Handler = Callable[[int, FrameType | None], Any] | int | None


def signals_wanted(handle_signals: bool | None) -> bool:
    """``handle_signals`` when given, else ``EZPZ_HANDLE_SIGNALS`` (default on)."""
    if handle_signals is not None:
        return bool(handle_signals)
    return env_flag(HANDLE_ENV, True)


def shutdown_grace() -> float:
    """Seconds the shutdown may take: ``EZPZ_SHUTDOWN_GRACE`` (default 20)."""
    return env_float(GRACE_ENV, DEFAULT_GRACE_S, minimum=0.0)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class SignalGuard:
    """Install ``callback(signum)`` in front of the current handlers of ``signals``.

    The callback runs at most once per guard for SIGTERM/SIGUSR1/SIGUSR2 (a
    second signal while it runs, or later, goes straight to the previous
    handler); for SIGINT on every Ctrl-C, since the program may go on. Exceptions from the
    callback are logged, never raised into the interrupted code.
    """

    def __init__(
        self,
        callback: Callable[[int], None],
        signals: Sequence[int] = HANDLED_SIGNALS,
    ) -> None:
        self._callback = callback
        self._signals = tuple(signals)
        self._previous: dict[int, Handler] = {}
        self._fired = False
        self._depth = 0  # > 0 inside deferring()
        self._pending: tuple[int, FrameType | None] | None = None
        self.installed = False

    def install(self) -> bool:
        """Install the handlers; False (nothing done) outside the main thread."""
        if self.installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            logger.debug("ezpz: not in the main thread; signal handlers not installed")
            return False
        for signum in self._signals:
            try:
                previous = signal.getsignal(signum)
                signal.signal(signum, self._handle)
            except (OSError, ValueError, RuntimeError) as exc:  # e.g. an embedded interpreter
                logger.debug("ezpz: cannot handle %s: %s", signal_name(signum), exc)
                continue
            self._previous[signum] = previous
        self.installed = bool(self._previous)
        return self.installed

    def restore(self) -> None:
        """Put the previous handlers back (where ezpz's handler is still the one installed)."""
        if not self._previous:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal would raise; the handlers stay (they are harmless)
        for signum, previous in self._previous.items():
            try:
                if signal.getsignal(signum) == self._handle:
                    signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (OSError, ValueError, RuntimeError):
                pass
        self._previous = {}
        self.installed = False

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Hold a signal that arrives inside the block until the block ends.

        For collective sections (the periodic ``ranks.h5`` flush): a rank
        that left one to shut down would leave the other ranks blocked inside
        MPI, unable to run their own handlers. Held, every rank finishes the
        collective, then shuts down.
        """
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self._pending is not None:
                signum, frame = self._pending
                self._pending = None
                self._handle(signum, frame)

    @property
    def fired(self) -> bool:
        """True once a signal ran the callback."""
        return self._fired

    # -- the handler -----------------------------------------------------------
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._depth > 0 and self._pending is None:
            self._pending = (signum, frame)  # see deferring()
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        # SIGINT may not end the program (a caught KeyboardInterrupt, a notebook):
        # its callback runs every time; the terminating signals' once.
        if not self._fired:
            self._fired = signum != signal.SIGINT
            try:
                self._callback(signum)
            except BaseException:  # the interrupted code must not see our failure
                logger.exception("ezpz: saving the run on %s failed", signal_name(signum))
        _hand_over(signum, frame, previous)


def _hand_over(signum: int, frame: FrameType | None, previous: Handler) -> None:
    """Do what the handler installed before ezpz's would have done."""
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # SIG_DFL, or None (a handler not installed from Python): the OS default.
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    # The default action of SIGTERM/SIGUSR1/SIGUSR2 ends the process; should the
    # signal be blocked in this thread, end it the same way.
    os._exit(128 + signum)  # pragma: no cover
