"""The MPI world: rank, world size, local rank and the communicator ezpz uses.

mpi4py is imported only when it is needed: when it is already imported by the
caller, when a launcher says there are several ranks, or when explicitly asked
for. Without MPI, launcher variables (PMI, Open MPI, Slurm, torchrun) answer.

``torch.distributed`` set-up on top of this world lives in
:mod:`ezpz.torch_setup`; ``ezpz.dist.setup_torch``, ``get_torch_device`` and
``cleanup`` still resolve to it (lazily: importing this module never imports
torch).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

logger = logging.getLogger(__name__)

# Checked in order; the first variable that is set wins.
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "WORLD_SIZE")
_LOCAL_RANK_VARS = (
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PALS_LOCAL_RANKID",
    "SLURM_LOCALID",
    "LOCAL_RANK",
)


def _env_int(names: tuple[str, ...]) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def _launched_with_several_ranks() -> bool:
    size = _env_int(_SIZE_VARS)
    return size is not None and size > 1


def mpi_module(required: bool = False) -> Any | None:
    """Return ``mpi4py.MPI`` when it should be used, else None.

    It is used when already imported, or when a launcher started several
    ranks (then MPI is the truth for rank and size), or when ``required``.
    """
    mod = sys.modules.get("mpi4py.MPI")
    if mod is not None:
        return mod
    if not (required or _launched_with_several_ranks()):
        return None
    try:
        from mpi4py import MPI
    except Exception:  # mpi4py missing or no MPI library: fall back to env vars
        if required:
            raise
        return None
    return MPI


def get_comm() -> Any | None:
    """``MPI.COMM_WORLD`` when MPI is in use, else None."""
    mpi = mpi_module()
    return None if mpi is None else mpi.COMM_WORLD


def get_rank() -> int:
    """This process's rank in the world (0 without MPI or a launcher)."""
    comm = get_comm()
    if comm is not None:
        return comm.Get_rank()
    return _env_int(_RANK_VARS) or 0


def get_world_size() -> int:
    """Number of ranks in the world (1 without MPI or a launcher)."""
    comm = get_comm()
    if comm is not None:
        return comm.Get_size()
    return _env_int(_SIZE_VARS) or 1


_node_local_rank: int | None = None


def get_local_rank() -> int:
    """Rank among the processes on this node.

    Launchers export it (Hydra, Open MPI, PALS, Slurm, torchrun). Where none
    does, the first call splits COMM_WORLD by shared memory, which is
    collective: call it on every rank then (``setup_torch`` does).
    """
    global _node_local_rank
    local = _env_int(_LOCAL_RANK_VARS)
    if local is not None:
        return local
    if _node_local_rank is None:
        comm = get_comm()
        if comm is None or comm.Get_size() == 1:
            return 0
        mpi = mpi_module()
        assert mpi is not None  # a communicator exists, so mpi4py is in use
        node = comm.Split_type(mpi.COMM_TYPE_SHARED, key=comm.Get_rank())
        _node_local_rank = node.Get_rank()
        node.Free()
    return _node_local_rank


# torch.distributed set-up moved to ezpz.torch_setup; these names still resolve here.
_TORCH_SETUP_NAMES = frozenset({"setup_torch", "get_torch_device", "cleanup", "_accelerator_kind"})


def __getattr__(name: str) -> Any:
    if name in _TORCH_SETUP_NAMES:
        from ezpz import torch_setup

        return getattr(torch_setup, "accelerator_kind" if name == "_accelerator_kind" else name)
    raise AttributeError(f"module 'ezpz.dist' has no attribute {name!r}")
