"""Waiting on non-blocking MPI requests with an optional deadline.

A rank that crashed or skipped ``update()`` never arrives at the statistics
reduction, and a blocking ``Allreduce`` would then hold the whole allocation
forever. With a timeout the requests are polled and a clear error names the
step instead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ezpz._env import env_float

log = logging.getLogger(__name__)

TIMEOUT_ENV = "EZPZ_COLLECTIVE_TIMEOUT"

# Poll tightly for this long (a healthy collective finishes in microseconds),
# then back off so a long wait does not burn a whole core.
_SPIN_SECONDS = 1e-3
# Tests before the first clock read (each is well under a microsecond).
_FREE_SPINS = 64
_MAX_SLEEP = 5e-3
# Waits without a deadline that are polled only so that signal handlers can run
# (Reducer.make_interruptible) sleep less: their latency is the training step's.
_INTERRUPTIBLE_MAX_SLEEP = 2e-4
# Give the CPU to another runnable process (not on every platform: then a no-op).
_yield: Callable[[], Any] = getattr(os, "sched_yield", lambda: None)


class CollectiveTimeoutError(TimeoutError):
    """Raised when ranks do not all reach an ezpz collective within the timeout."""


def timeout_from_env(value: float | None) -> float | None:
    """The timeout in seconds: ``value`` when given, else ``EZPZ_COLLECTIVE_TIMEOUT``.

    None (unset, empty, 0 or negative) means block as usual. A malformed
    environment value is logged and ignored; a bad argument is an error.
    """
    if value is not None:
        if not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"timeout must be a number of seconds, got {value!r}")
        return float(value) if value > 0 else None
    seconds = env_float(TIMEOUT_ENV, None)
    return seconds if seconds is not None and seconds > 0 else None


def wait_all(
    requests: Sequence[Any],
    *,
    deadline: float | None,
    step: int | None,
    what: str,
    comm: Any,
) -> None:
    """Complete ``requests``; raise CollectiveTimeoutError once ``deadline`` passes.

    ``deadline`` is a ``time.monotonic()`` value, or None to wait forever.
    """
    from mpi4py import MPI

    if deadline is None:
        MPI.Request.Waitall(list(requests))
        return
    poll_until(
        list(requests),
        deadline,
        lambda: (
            f"ezpz: cross-rank statistics for step {step} ({what}) did not complete on "
            f"rank {comm.Get_rank()} of {comm.Get_size()} within the "
            f"{TIMEOUT_ENV} timeout: another rank crashed, hangs, or skipped "
            f"history.update() for this step. The communicator is no longer usable; "
            f"abort the job."
        ),
        max_sleep=_MAX_SLEEP if deadline != float("inf") else _INTERRUPTIBLE_MAX_SLEEP,
    )


def poll_until(
    requests: list[Any],
    deadline: float,
    message: Callable[[], str],
    *,
    max_sleep: float = _MAX_SLEEP,
) -> None:
    """Test ``requests`` until all complete; raise CollectiveTimeoutError(``message()``)
    once ``deadline`` (a ``time.monotonic()`` value) passes.

    Each request is tested on its own (``Test``, never ``Testall``: MPICH 5.0
    reports MPI_ERR_IN_STATUS from ``Testall`` on persistent collectives).
    The first ``_FREE_SPINS`` tests read no clock: a balanced collective
    completes within them. Then it polls for ``_SPIN_SECONDS``, yielding the
    CPU between tests, and sleeps with exponential back-off up to
    ``max_sleep``. The yield costs a syscall when the core is otherwise idle;
    with more ranks than cores it lets the rank being waited for run at once
    instead of after this one's time slice (4 ranks on 2 cores: ~2.6 ms per
    update without it, ~0.2 ms with it).
    """
    pending = list(requests)
    spins = 0
    spin_until = 0.0
    sleep = 1e-5
    while True:
        while pending and pending[-1].Test():
            pending.pop()
        if not pending:
            return
        spins += 1
        if spins < _FREE_SPINS:
            continue
        now = time.monotonic()
        if spins == _FREE_SPINS:
            spin_until = now + _SPIN_SECONDS
        if now >= deadline:
            raise CollectiveTimeoutError(message())
        if now <= spin_until:
            _yield()
        else:
            time.sleep(sleep)
            sleep = min(sleep * 2, max_sleep)
