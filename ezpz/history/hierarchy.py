"""How a packed buffer is reduced across the ranks of a communicator.

Flat: one ``Allreduce``. Hierarchical (above the threshold): a node-local
``Reduce`` to the node leader, an ``Allreduce`` among leaders, and a
node-local ``Bcast`` of the result, so only one rank per node talks across
the network. Nodes are the shared-memory groups of ``Split_type`` or, for
testing on one machine, consecutive blocks of ``ranks_per_node`` ranks.

With a deadline every call is non-blocking and polled (collective_timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ezpz.history.collective_timeout import wait_all

# Tests of a polled persistent pair before wait_all takes over (each well under 1 µs).
_QUICK_TESTS = 64


class Topology:
    """The communicators one reduction runs over, and the reduce itself."""

    def __init__(
        self,
        comm: Any,
        *,
        hierarchical: bool,
        ranks_per_node: int | None = None,
        timeout: float | None = None,
    ) -> None:
        from mpi4py import MPI

        self.comm = comm
        self.timeout = timeout
        self.hierarchical = hierarchical
        self.node: Any = None
        self.leaders: Any = None
        self.is_leader = True
        if hierarchical:
            rank = comm.Get_rank()
            if ranks_per_node:
                self.node = comm.Split(color=rank // ranks_per_node, key=rank)
            else:
                self.node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
            self.is_leader = self.node.Get_rank() == 0
            color = 0 if self.is_leader else MPI.UNDEFINED
            self.leaders = comm.Split(color=color, key=rank)
        if not hierarchical and timeout is None:
            self.allreduce = self._allreduce_flat  # type: ignore[method-assign]
            self.allreduce_pair = self._allreduce_pair_flat  # type: ignore[method-assign]

    def _allreduce_flat(self, send: Any, recv: Any, op: Any, **_: Any) -> None:
        self.comm.Allreduce(send, recv, op)

    def _allreduce_pair_flat(
        self, a: tuple[Any, Any, Any], b: tuple[Any, Any, Any], **_: Any
    ) -> None:
        comm = self.comm
        self._waitall([comm.Iallreduce(*a), comm.Iallreduce(*b)])

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _waitall(reqs: list[Any]) -> None:
        from mpi4py import MPI

        MPI.Request.Waitall(reqs)

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    def _wait(self, req: Any, deadline: float | None, step: int | None, what: str) -> None:
        wait_all([req], deadline=deadline, step=step, what=what, comm=self.comm)

    # -- collectives -------------------------------------------------------

    def allreduce(self, send: Any, recv: Any, op: Any, *, step: int | None, what: str) -> None:
        """``recv = op over ranks of send``; identical on every rank."""
        from mpi4py import MPI

        deadline = self._deadline()
        if not self.hierarchical:
            if deadline is None:
                self.comm.Allreduce(send, recv, op)
            else:
                self._wait(self.comm.Iallreduce(send, recv, op), deadline, step, what)
            return
        node, leaders = self.node, self.leaders
        root_recv = recv if self.is_leader else None
        if deadline is None:
            node.Reduce(send, root_recv, op, root=0)
            if self.is_leader and leaders.Get_size() > 1:
                leaders.Allreduce(MPI.IN_PLACE, recv, op)
            node.Bcast(recv, root=0)
            return
        self._wait(node.Ireduce(send, root_recv, op, root=0), deadline, step, what)
        if self.is_leader and leaders.Get_size() > 1:
            self._wait(leaders.Iallreduce(MPI.IN_PLACE, recv, op), deadline, step, what)
        self._wait(node.Ibcast(recv, root=0), deadline, step, what)

    def allreduce_pair(
        self,
        a: tuple[Any, Any, Any],
        b: tuple[Any, Any, Any],
        *,
        step: int | None,
        what: str,
    ) -> None:
        """Two reductions ``(send, recv, op)`` in flight together: one wait, not two."""
        from mpi4py import MPI

        deadline = self._deadline()
        comm = self.comm

        def wait(reqs: list[Any]) -> None:
            wait_all(reqs, deadline=deadline, step=step, what=what, comm=comm)

        if not self.hierarchical:
            wait([comm.Iallreduce(*a), comm.Iallreduce(*b)])
            return
        node, leaders, leader = self.node, self.leaders, self.is_leader
        wait([node.Ireduce(s, r if leader else None, op, root=0) for s, r, op in (a, b)])
        if leader and leaders.Get_size() > 1:
            wait([leaders.Iallreduce(MPI.IN_PLACE, r, op) for _, r, op in (a, b)])
        wait([node.Ibcast(r, root=0) for _, r, _ in (a, b)])

    def pair(
        self, a: tuple[Any, Any, Any], b: tuple[Any, Any, Any]
    ) -> Callable[[int | None, str], None]:
        """A reusable runner of two fixed reductions ``(send, recv, op)``.

        The buffers must stay the same objects for the runner's life. Flat
        topologies get MPI-4 persistent collectives (``Allreduce_init``) set up
        once, so a step is two ``Start`` calls and one wait, without per-call
        buffer parsing or request creation. The wait follows ``self.timeout``
        at each call: blocking without one, polled (``Test`` per request) with
        one, ``math.inf`` included (``Reducer.make_interruptible``).
        Hierarchical topologies and MPIs without persistent collectives (Open
        MPI 4) get :meth:`allreduce_pair`. Call :meth:`free_pair` on the
        runner when the buffers are replaced.
        """
        if not self.hierarchical:
            try:
                reqs = [self.comm.Allreduce_init(*a), self.comm.Allreduce_init(*b)]
            except (AttributeError, NotImplementedError):
                reqs = None
            except Exception:  # MPI_ERR_* from an MPI that lacks them
                reqs = None
            if reqs is not None:
                return _PersistentPair(reqs, self)
        allreduce_pair = self.allreduce_pair

        def run(step: int | None, what: str) -> None:
            allreduce_pair(a, b, step=step, what=what)

        return run

    @staticmethod
    def free_pair(runner: Callable[[int | None, str], None]) -> None:
        """Release what :meth:`pair` set up for ``runner`` (persistent requests)."""
        if isinstance(runner, _PersistentPair):
            runner.free()

    def allgather_bytes(self, payload: bytes, *, step: int | None, what: str) -> list[bytes]:
        """Every rank's ``payload``, in rank order (two buffer-based collectives)."""
        import numpy as np
        from mpi4py import MPI

        comm = self.comm
        deadline = self._deadline()
        size = comm.Get_size()
        mine = np.array([len(payload)], dtype=np.int64)
        lengths = np.empty(size, dtype=np.int64)
        if deadline is None:
            comm.Allgather(mine, lengths)
        else:
            self._wait(comm.Iallgather(mine, lengths), deadline, step, what)
        offsets = np.zeros(size, dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        total = int(lengths.sum())
        send = np.frombuffer(payload, dtype=np.uint8) if payload else np.empty(0, np.uint8)
        recv = np.empty(max(total, 1), dtype=np.uint8)
        counts, displs = lengths.astype(np.intc), offsets.astype(np.intc)
        spec = [recv, (counts, displs), MPI.BYTE]
        if deadline is None:
            comm.Allgatherv([send, MPI.BYTE], spec)
        else:
            self._wait(comm.Iallgatherv([send, MPI.BYTE], spec), deadline, step, what)
        raw = recv.tobytes()
        return [raw[o : o + n] for o, n in zip(offsets.tolist(), lengths.tolist(), strict=True)]

    def free(self) -> None:
        """Free the communicators this topology created (never ``comm`` itself)."""
        from mpi4py import MPI

        for sub in (self.node, self.leaders):
            if sub is not None and sub != MPI.COMM_NULL:
                sub.Free()
        self.node = self.leaders = None


class _PersistentPair:
    """Two persistent ``Allreduce`` requests started and completed together."""

    __slots__ = ("reqs", "_topology", "_waitall")

    def __init__(self, reqs: list[Any], topology: Topology) -> None:
        from mpi4py import MPI

        self.reqs = reqs
        self._topology = topology
        self._waitall = MPI.Request.Waitall

    def __call__(self, step: int | None, what: str) -> None:
        reqs = self.reqs
        first, second = reqs
        # Two Starts: Startall converts the list to a request array on every call.
        first.Start()
        second.Start()
        timeout = self._topology.timeout
        if timeout is None:
            self._waitall(reqs)
            return
        # Polled: a deadline, or only so that signal handlers can run (inf). A
        # balanced step completes within a few tests; testing here first keeps
        # wait_all's set-up off the common path. (A completed persistent request
        # is inactive, and testing it again answers true at once.)
        for _ in range(_QUICK_TESTS):
            if second.Test() and first.Test():
                return
        wait_all(
            reqs,
            deadline=time.monotonic() + timeout,
            step=step,
            what=what,
            comm=self._topology.comm,
        )

    def free(self) -> None:
        for req in self.reqs:
            try:
                req.Free()
            except Exception:  # MPI already finalized, or the request is gone
                pass
        self.reqs = []
