"""The MPI world: rank, world size, local rank and the communicator ezpz uses.

mpi4py is imported only when it is needed: when it is already imported by the
caller, when a launcher says there are several ranks, or when explicitly asked
for. Without MPI, launcher variables (PMI, Open MPI, Slurm, torchrun) answer.
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
        node = comm.Split_type(mpi.COMM_TYPE_SHARED, key=comm.Get_rank())
        _node_local_rank = node.Get_rank()
        node.Free()
    return _node_local_rank


# --------------------------------------------------------------------------
# torch.distributed on top of the MPI world
# --------------------------------------------------------------------------


def _accelerator_kind() -> str:
    """``"cuda"``, ``"xpu"``, ``"mps"`` or ``"cpu"``: what torch can use here."""
    import torch

    if torch.cuda.is_available():  # also true on ROCm builds
        return "cuda"
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return "xpu"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _default_backend(kind: str) -> str:
    if kind == "cuda":
        return "nccl"
    if kind == "xpu":
        import torch.distributed as dist

        # torch >= 2.8 ships xccl; older stacks register "ccl" through
        # oneccl_bindings_for_pytorch.
        if hasattr(dist.Backend, "XCCL"):
            return "xccl"
        try:
            import oneccl_bindings_for_pytorch  # noqa: F401
        except ImportError:
            logger.warning("no xccl/ccl backend for XPU found; using gloo")
            return "gloo"
        return "ccl"
    return "gloo"


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def _rendezvous(comm: Any | None) -> tuple[str, int]:
    """The master address and port every rank agrees on.

    ``MASTER_ADDR``/``MASTER_PORT`` win when set (torchrun, or a user who
    needs a particular interface). Otherwise rank 0 picks: 127.0.0.1 when
    every rank is on one node (no name resolution needed), else its
    hostname; and a free port. The choice is broadcast over MPI.
    """
    import socket

    env_addr = os.environ.get("MASTER_ADDR")
    env_port = os.environ.get("MASTER_PORT")
    if comm is None or comm.Get_size() == 1:
        addr = env_addr or "127.0.0.1"
        port = int(env_port) if env_port else _free_port()
        return addr, port
    hostnames = comm.allgather(socket.gethostname())
    choice: tuple[str, int] | None = None
    if comm.Get_rank() == 0:
        single_node = len(set(hostnames)) == 1
        addr = env_addr or ("127.0.0.1" if single_node else hostnames[0])
        port = int(env_port) if env_port else _free_port()
        choice = (addr, port)
    addr, port = comm.bcast(choice, root=0)
    return addr, port


def _seed_everything(seed: int, rank: int) -> None:
    import random

    import numpy as np
    import torch

    # Offset by rank so ranks draw different data; DDP copies rank 0's
    # weights to every rank at construction, so models still start equal.
    rank_seed = seed + rank
    random.seed(rank_seed)
    np.random.seed(rank_seed % 2**32)
    torch.manual_seed(rank_seed)


_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_saved_env: dict[str, str | None] = {}


def get_torch_device(*, as_string: bool = False) -> Any:
    """The device this rank should compute on.

    ``cuda:<i>`` / ``xpu:<i>`` for the current accelerator (``setup_torch``
    sets it from the local rank), else ``mps`` or ``cpu``. Returns a
    ``torch.device`` (or its string with ``as_string=True``).
    """
    import torch

    kind = _accelerator_kind()
    if kind == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    elif kind == "xpu":
        device = torch.device("xpu", torch.xpu.current_device())
    else:
        device = torch.device(kind)
    return str(device) if as_string else device


def setup_torch(
    backend: str | None = None,
    seed: int | None = None,
    *,
    timeout_s: float | None = None,
) -> int:
    """Initialise ``torch.distributed`` from the MPI world and return the rank.

    Rank and world size come from MPI (``mpiexec``, PBS/PALS, ``srun`` with
    PMI), or from launcher variables when MPI is absent (``torchrun``
    exports ``MASTER_ADDR``/``MASTER_PORT`` too). ``backend`` defaults to
    nccl on CUDA/ROCm, xccl (or ccl) on Intel XPU, gloo otherwise. The
    local accelerator is chosen from the node-local rank. ``seed`` seeds
    python, numpy and torch with ``seed + rank``. Idempotent: a second call
    returns the rank of the group already set up. Collective: every rank
    must call it.
    """
    import datetime

    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        if seed is not None:
            _seed_everything(seed, rank)
        return rank

    world_size = get_world_size()
    comm = get_comm()
    if world_size > 1 and comm is None and not os.environ.get("MASTER_ADDR"):
        raise RuntimeError(
            f"setup_torch: the launcher reports {world_size} ranks but mpi4py is not "
            "usable and MASTER_ADDR is not set; install mpi4py or launch with torchrun"
        )
    rank = get_rank()
    local_rank = get_local_rank()  # collective when no launcher exports it

    kind = _accelerator_kind()
    if kind == "cuda":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    elif kind == "xpu":
        torch.xpu.set_device(local_rank % torch.xpu.device_count())

    chosen = (backend or os.environ.get("EZPZ_TORCH_BACKEND") or _default_backend(kind)).lower()
    addr, port = _rendezvous(comm)
    # Libraries that read the torchrun variables see the same world;
    # cleanup() puts the previous values back.
    _saved_env.clear()
    _saved_env.update({name: os.environ.get(name) for name in _TORCHRUN_VARS})
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(local_rank),
            "MASTER_ADDR": addr,
            "MASTER_PORT": str(port),
        }
    )
    kwargs: dict[str, Any] = {}
    if timeout_s is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(
        backend=chosen,
        init_method=f"tcp://{addr}:{port}",
        rank=rank,
        world_size=world_size,
        **kwargs,
    )
    if seed is not None:
        _seed_everything(seed, rank)
    if rank == 0:
        logger.info(
            "torch.distributed: backend=%s world_size=%d master=%s:%d device=%s",
            chosen,
            world_size,
            addr,
            port,
            get_torch_device(as_string=True),
        )
    return rank


def cleanup() -> None:
    """Tear down what ``setup_torch`` set up (a no-op when nothing was)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name, value in _saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved_env.clear()
