"""Resume under mpiexec, in-process: every rank agrees, the store is every rank's (issue 10).

Real signals and killed jobs are in tests/test_lifecycle_restart.py (they need
a job of their own); here two segments run in one job: the first is closed
without finalize (what a killed job leaves behind), the second resumes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

MPI = pytest.importorskip("mpi4py.MPI")


@pytest.fixture
def shared_dir(tmp_path):
    return MPI.COMM_WORLD.bcast(str(tmp_path), root=0)


def value(step: int, rank: int) -> float:
    return step + 0.5 * rank


def test_resume_is_decided_on_rank_0_and_continues_every_rank(shared_dir, monkeypatch):
    from ezpz.history import History

    monkeypatch.setenv("EZPZ_RANKS_FLUSH_EVERY", "4")
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    first = History(report_dir=f"{shared_dir}/report", backends="none")
    for step in range(10):
        first.update({"train/loss": value(step, rank)}, step=step)
    first.close()  # no finalize: the run stays resumable

    second = History(report_dir=f"{shared_dir}/report", backends="none", resume="auto")
    assert second.run_id == first.run_id
    assert comm.allgather(second.run_id) == [first.run_id] * size
    # Every rank holds the recorded history (statistics are the same everywhere).
    np.testing.assert_allclose(
        second.history["train/loss/mean"], [value(s, 0) + 0.25 * (size - 1) for s in range(10)]
    )
    for step in range(8, 14):  # restarted from a checkpoint at step 7
        second.update({"train/loss": value(step, rank) + 100}, step=step)
    steps = second.store.group("train").steps
    np.testing.assert_array_equal(steps, np.arange(14))
    result = second.finalize(plot=False, all_ranks=True)
    second.close()
    np.testing.assert_array_equal(result["step"].values, np.arange(14))
    if rank == 0:
        import h5py

        (outdir,) = [p for p in (Path(shared_dir) / "report").iterdir() if p.is_dir()]
        with h5py.File(outdir / "ranks.h5", "r") as f:
            got_steps, got = f["train/step"][:], f["train/loss"][:]
        assert got.shape == (size, 14)
        for r in range(size):
            np.testing.assert_array_equal(got_steps[r], np.arange(14))
            want = [value(s, r) + (100 if s >= 8 else 0) for s in range(14)]
            np.testing.assert_array_equal(got[r], want)
        lines = [json.loads(x) for x in second.jsonl_path.read_text().splitlines()]
        events = [r["_event"] for r in lines if "_event" in r]
        assert events == ["start", "start", "finalized"]
    comm.Barrier()


def test_resume_at_another_world_size(shared_dir, caplog):
    """A run written by one process continues on every rank (documented in restarts.md)."""
    from ezpz.history import History

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    report = f"{shared_dir}/report"
    run_id = None
    if rank == 0:
        alone = History(report_dir=report, backends="none", comm=MPI.COMM_SELF)
        for step in range(5):
            alone.update({"loss": float(step)}, step=step)
        alone.close()
        run_id = alone.run_id
    run_id = comm.bcast(run_id, root=0)
    with caplog.at_level("WARNING"):
        hist = History(report_dir=report, backends="none", resume=run_id)
    assert hist.run_id == run_id
    hist.update({"loss": 5.0 + rank}, step=5)
    np.testing.assert_array_equal(hist.store.group("").steps, np.arange(6))
    np.testing.assert_array_equal(hist.history["loss"][:5], np.arange(5.0))
    if rank == 0 and comm.Get_size() > 1:
        assert "ranks" in caplog.text  # "resumed at N ranks (it ran at 1)"
    hist.close()
