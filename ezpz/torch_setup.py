"""``torch.distributed`` on top of the MPI world of :mod:`ezpz.dist`.

:func:`setup_torch` initialises the default process group from the ranks MPI
(or a launcher) reports, picks this rank's accelerator from its node-local
rank, and agrees on a rendezvous address over MPI; :func:`cleanup` undoes it.
torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from ezpz._env import env_str
from ezpz.dist import get_comm, get_local_rank, get_rank, get_world_size

__all__ = ["accelerator_kind", "cleanup", "get_torch_device", "setup_torch"]

logger = logging.getLogger(__name__)


def accelerator_kind() -> str:
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

    kind = accelerator_kind()
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

    kind = accelerator_kind()
    if kind == "cuda":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    elif kind == "xpu":
        torch.xpu.set_device(local_rank % torch.xpu.device_count())

    chosen = (backend or env_str("EZPZ_TORCH_BACKEND") or _default_backend(kind)).lower()
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
