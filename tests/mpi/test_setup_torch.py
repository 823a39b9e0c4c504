"""setup_torch under real mpiexec ranks (gloo on CPU)."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch", reason="setup_torch needs torch")
MPI = pytest.importorskip("mpi4py.MPI")

import torch.distributed as dist  # noqa: E402

import ezpz  # noqa: E402

pytestmark = pytest.mark.mpi


@pytest.fixture
def torch_world():
    comm = MPI.COMM_WORLD
    rank = ezpz.setup_torch(seed=11)
    yield comm, rank
    ezpz.cleanup()
    comm.Barrier()


def test_ranks_match_mpi_and_collectives_work(torch_world):
    comm, rank = torch_world
    size = comm.Get_size()
    assert rank == comm.Get_rank()
    assert dist.get_rank() == rank and dist.get_world_size() == size
    assert dist.get_backend() == ("nccl" if torch.cuda.is_available() else "gloo")
    t = torch.tensor([float(rank + 1)], device=ezpz.get_torch_device())
    dist.all_reduce(t)
    assert t.item() == size * (size + 1) / 2
    box = [f"from-{rank}"]
    dist.broadcast_object_list(box, src=size - 1)
    assert box == [f"from-{size - 1}"]


def test_every_rank_agrees_on_the_rendezvous(torch_world):
    comm, rank = torch_world
    seen = comm.allgather((os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]))
    assert len(set(seen)) == 1
    assert os.environ["RANK"] == str(rank)
    assert os.environ["WORLD_SIZE"] == str(comm.Get_size())
    local = comm.allgather(int(os.environ["LOCAL_RANK"]))
    assert sorted(local) == list(range(comm.Get_size()))  # one node here


def test_idempotent_and_seeded_per_rank(torch_world):
    comm, rank = torch_world
    assert ezpz.setup_torch() == rank  # no second init, no error
    draws = comm.allgather(torch.rand(1).item())
    assert len(set(draws)) == comm.Get_size()  # seed + rank: each rank differs


def test_cleanup_then_setup_again():
    comm = MPI.COMM_WORLD
    before = os.environ.get("MASTER_PORT")
    ezpz.setup_torch()
    assert os.environ["MASTER_PORT"]
    ezpz.cleanup()
    assert not dist.is_initialized()
    assert os.environ.get("MASTER_PORT") == before  # cleanup restores the environment
    rank = ezpz.setup_torch(backend="gloo")
    t = torch.ones(1)
    dist.all_reduce(t)
    assert rank == comm.Get_rank() and t.item() == comm.Get_size()
    ezpz.cleanup()
    comm.Barrier()
