"""The one-off collectives of ``History()`` under ``EZPZ_COLLECTIVE_TIMEOUT``.

A ``History`` constructed on some ranks only (``if rank == 0: History()``)
used to hang forever in ``Comm.Dup`` or ``bcast`` (issue 12 item 12). With the
timeout set, these run as non-blocking MPI calls that are polled, and a rank
whose peers never arrive raises :class:`CollectiveTimeoutError` naming the
call it waited in. Without the timeout they are the plain blocking calls.

The first collective (the ``Idup`` of the user's communicator) only completes
once every rank has reached it, so it doubles as the check that every rank is
constructing; the ones after it run on the private communicator.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np

from ezpz.history.collective_timeout import (
    TIMEOUT_ENV,
    poll_until,
    timeout_from_env,
)

__all__ = ["timed_bcast", "timed_dup", "wait_or_raise"]


def wait_or_raise(requests: list[Any], comm: Any, what: str, timeout: float | None) -> None:
    """Complete ``requests`` within ``timeout`` seconds (None: wait forever) or raise."""
    from mpi4py import MPI

    if timeout is None:
        MPI.Request.Waitall(requests)
        return
    poll_until(
        requests,
        time.monotonic() + timeout,
        lambda: (
            f"ezpz: {what} did not complete on rank {comm.Get_rank()} of "
            f"{comm.Get_size()} within {TIMEOUT_ENV}={timeout:g}s: another rank did "
            f"not reach it (History() and finalize() are called on every rank of the "
            f"communicator), crashed, or hangs. The communicator is no longer usable; "
            f"abort the job."
        ),
    )


def timed_dup(comm: Any, what: str, timeout: float | None = None) -> Any:
    """``comm.Dup()``; with a timeout (argument, else the environment) a polled ``Idup``."""
    timeout = timeout_from_env(timeout)
    if timeout is None:
        return comm.Dup()
    new, request = comm.Idup()
    wait_or_raise([request], comm, what, timeout)
    return new


def timed_bcast(
    comm: Any, obj: Any, what: str, *, root: int = 0, timeout: float | None = None
) -> Any:
    """``comm.bcast(obj, root)``; with a timeout, two polled ``Ibcast`` calls (size, bytes)."""
    timeout = timeout_from_env(timeout)
    if timeout is None:
        return comm.bcast(obj, root=root)
    from mpi4py import MPI

    is_root = comm.Get_rank() == root
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if is_root else b""
    size = np.array([len(payload)], dtype=np.int64)
    wait_or_raise([comm.Ibcast([size, MPI.INT64_T], root=root)], comm, what, timeout)
    buf = (
        np.frombuffer(payload, dtype=np.uint8).copy()
        if is_root
        else np.empty(int(size[0]), dtype=np.uint8)
    )
    wait_or_raise([comm.Ibcast([buf, MPI.BYTE], root=root)], comm, what, timeout)
    return obj if is_root else pickle.loads(buf.tobytes())
