"""Does every rank call ``finalize()``? A point-to-point handshake that cannot hang.

``finalize()`` must not enter a collective unless every rank is in it (the
common ``if rank == 0: history.finalize()`` must never hang), so before the
collective ranks.h5 flush the ranks agree, with point-to-point messages
only, on whether all of them are here. Rank 0 decides, everyone obeys:

1. rank 0 sends every rank a *probe* carrying a fresh nonce and the run's tag;
2. a rank in finalize answers with an *acknowledgement* echoing the nonce;
3. rank 0 collects acknowledgements until its deadline, then sends every
   rank its *decision* (all here / rank 0 alone), tagged with the same nonce.

Messages left over from an earlier finalize (rank 0 went alone; or another
History whose communicator's context MPI reused) carry another nonce or tag
and are discarded. Sends whose receiver may never come are freed before they
complete; their buffers must outlive them, so :class:`FinalizeHandshake`
keeps them for as long as it lives (a few bytes per finalize).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from typing import Any

import numpy as np

from ezpz._env import env_float

__all__ = ["TIMEOUT_ENV", "WAIT_ENV", "FinalizeHandshake", "run_tag"]

logger = logging.getLogger(__name__)

WAIT_ENV = "EZPZ_FINALIZE_WAIT"
TIMEOUT_ENV = "EZPZ_FINALIZE_TIMEOUT"
DEFAULT_WAIT_S = 5.0
DEFAULT_TIMEOUT_S = 300.0
_TAG_PROBE = 0x5EA1
_TAG_ACK = 0x5EA2
_TAG_DECISION = 0x5EA3
_POLL_S = 0.002


def run_tag(run_id: str) -> int:
    """A 62-bit number naming one History, the same on every rank."""
    digest = hashlib.blake2b(str(run_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def _mpi() -> Any:
    from mpi4py import MPI

    return MPI


def _ranges(ranks: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``: missing ranks, short even at scale."""
    parts: list[tuple[int, int]] = []
    for r in ranks:
        if parts and parts[-1][1] == r - 1:
            parts[-1] = (parts[-1][0], r)
        else:
            parts.append((r, r))
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)


def _wait_s() -> float:
    return env_float(WAIT_ENV, DEFAULT_WAIT_S, minimum=0.0)


class FinalizeHandshake:
    """The probe / acknowledge / decide handshake of one History's finalize calls.

    ``tag`` names the run (:func:`run_tag`); the same on every rank. The
    object owns the send buffers of requests freed before completion, so it
    must live as long as the communicator it talks on (the per-rank flusher
    holds it).
    """

    def __init__(self, tag: int) -> None:
        self.tag = tag
        self._keep_alive: list[np.ndarray] = []

    def agree(self, comm: Any, all_ranks: bool | None) -> bool:
        """True when every rank of ``comm`` is in finalize (then collectives are safe).

        ``all_ranks``: True waits up to ``EZPZ_FINALIZE_TIMEOUT`` s (300) for
        everyone, False decides "rank 0 alone" at once, None waits
        ``EZPZ_FINALIZE_WAIT`` s (5).
        """
        timeout = env_float(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, minimum=0.0)
        if comm.Get_rank() == 0:
            if all_ranks is None:
                wait = _wait_s()
            elif all_ranks:
                wait = timeout
            else:
                wait = 0.0
            return self._decide(comm, wait, timeout, explicit_alone=all_ranks is False)
        return self._follow(comm, timeout)

    # -- messages -----------------------------------------------------------
    def _send(self, comm: Any, values: list[int], dest: int, msg_tag: int) -> Any:
        mpi = _mpi()
        buf = np.array(values, dtype=np.int64)
        self._keep_alive.append(buf)  # must outlive a request freed before completion
        return comm.Isend([buf, mpi.INT64_T], dest=dest, tag=msg_tag)

    @staticmethod
    def _recv(comm: Any, source: int, msg_tag: int, n: int) -> np.ndarray:
        mpi = _mpi()
        buf = np.zeros(n, dtype=np.int64)
        comm.Recv([buf, mpi.INT64_T], source=source, tag=msg_tag)
        return buf

    @staticmethod
    def _settle(reqs: list[Any], wait: bool) -> None:
        """Complete sends whose receivers are known to be there; free the others."""
        mpi = _mpi()
        if wait:
            mpi.Request.Waitall(reqs)
            return
        for req in reqs:  # a rank that never comes never matches these
            if not req.Test():
                req.Free()

    # -- the two roles ----------------------------------------------------------
    def _decide(
        self, comm: Any, wait: float, timeout: float, *, explicit_alone: bool = False
    ) -> bool:
        """Rank 0: probe everyone, collect acknowledgements, decide.

        Rank 0 goes alone only when no other rank joined within ``wait`` s. Once
        any rank has joined, every rank is expected: rank 0 waits for the rest
        up to ``timeout`` s (``EZPZ_FINALIZE_TIMEOUT``), since seconds of skew at
        finalize are normal at scale (checkpoint I/O, stragglers).
        """
        mpi = _mpi()
        size = comm.Get_size()
        nonce = secrets.randbits(62)
        probes = [self._send(comm, [nonce, self.tag], r, _TAG_PROBE) for r in range(1, size)]
        acked: set[int] = set()
        status = mpi.Status()
        start = time.monotonic()
        deadline, full_deadline = start + wait, start + max(wait, timeout)
        while True:
            while comm.Iprobe(source=mpi.ANY_SOURCE, tag=_TAG_ACK, status=status):
                src = status.Get_source()
                if self._recv(comm, src, _TAG_ACK, 1)[0] == nonce:  # else: an old acknowledgement
                    acked.add(src)
            if len(acked) == size - 1:
                break
            now = time.monotonic()
            if now >= deadline and (not acked or now >= full_deadline):
                break
            time.sleep(_POLL_S)
        together = bool(len(acked) == size - 1)
        decision = [nonce, int(together), self.tag]
        decisions = [self._send(comm, decision, r, _TAG_DECISION) for r in range(1, size)]
        self._settle(probes + decisions, wait=together)
        if not together:
            missing = _ranges(sorted(set(range(1, size)) - acked))
            waited = time.monotonic() - start
            if explicit_alone:  # finalize(all_ranks=False): what the caller asked for
                logger.info("finalize: all_ranks=False; rank 0 writes ranks.h5 alone")
            else:
                logger.warning(
                    "finalize: rank(s) %s did not reach finalize() within %.1fs (%s); rank 0 "
                    "writes ranks.h5 alone: every other rank's rows in it stop at the last "
                    "periodic flush (call finalize() on every rank, or raise %s/%s)",
                    missing,
                    waited,
                    "none joined" if not acked else f"{len(acked)} of {size - 1} joined",
                    WAIT_ENV,
                    TIMEOUT_ENV,
                )
        return together

    def _follow(self, comm: Any, timeout: float) -> bool:
        """Other ranks: answer rank 0's probe and obey its decision."""
        deadline = time.monotonic() + timeout

        def poll(msg_tag: int) -> bool:
            while not comm.Iprobe(source=0, tag=msg_tag):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL_S)
            return True

        while poll(_TAG_PROBE):
            nonce, probe_tag = self._recv(comm, 0, _TAG_PROBE, 2)
            if probe_tag != self.tag:
                continue  # another History's leftover
            ack = self._send(comm, [int(nonce)], 0, _TAG_ACK)
            # Rank 0 may wait up to its own EZPZ_FINALIZE_TIMEOUT for late ranks.
            deadline = max(deadline, time.monotonic() + timeout + _wait_s())
            while poll(_TAG_DECISION):
                d_nonce, together, d_tag = self._recv(comm, 0, _TAG_DECISION, 3)
                if d_nonce == nonce and d_tag == self.tag:
                    break
            else:
                break  # timed out waiting for the decision
            self._settle([ack], wait=bool(together))
            if together:
                return True
            # Rank 0 went alone: in this finalize (we are late) or in an earlier one
            # whose messages we just drained. Rank 0 probes as soon as it enters a
            # finalize, so a short grace period tells the two apart.
            grace = time.monotonic() + _wait_s()
            while not comm.Iprobe(source=0, tag=_TAG_PROBE):
                if time.monotonic() >= min(grace, deadline):
                    return False
                time.sleep(_POLL_S)
        logger.warning("finalize: no word from rank 0 within %.0fs; not writing ranks.h5", timeout)
        return False
