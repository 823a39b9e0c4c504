"""Fault suite inside an MPI job (run by tests/run_suites.py at 2 and 4 ranks).

A backend that raises on every call, and a JSONL on ``/dev/full``, on a
distributed run: every rank keeps training and reducing, ``finalize()`` on
every rank writes every output, and the healthy csv backend has every step.
"""

from __future__ import annotations

import pytest
from _faults import csv_frame

from ezpz.tracker import TrackerBackend, register_backend, unregister_backend

pytestmark = pytest.mark.mpi

STEPS = 40


class AlwaysRaises(TrackerBackend):
    name = "fault-mpi-raises"

    def __init__(self, **_):
        pass

    def log(self, metrics, step=None, commit=True):
        raise RuntimeError("broken backend")

    def log_config(self, config):
        raise RuntimeError("broken backend")

    def finish(self):
        raise RuntimeError("broken backend")


@pytest.fixture
def comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def test_broken_backend_and_full_jsonl_on_every_rank(comm, tmp_path, monkeypatch):
    from ezpz.history import History

    monkeypatch.setenv("EZPZ_TRACK_MEMORY", "0")
    monkeypatch.setenv("EZPZ_TRACKER_QUEUE_SIZE", "1000000")  # no overflow drops under load
    register_backend(AlwaysRaises.name, AlwaysRaises)
    shared = comm.bcast(str(tmp_path), root=0)
    try:
        hist = History(
            outdir=f"{shared}/out",
            jsonl_path="/dev/full",  # rank 0's JSONL fails at its first line
            backends=["csv", AlwaysRaises.name],
        )
        for step in range(STEPS):
            hist.update({"train/loss": float(comm.rank + step)}, step=step)
        ds = hist.finalize(plot=False)
        hist.close()
    finally:
        unregister_backend(AlwaysRaises.name)
    size = comm.Get_size()
    assert ds.sizes["draw"] == STEPS
    expected_mean = [step + (size - 1) / 2 for step in range(STEPS)]
    assert ds["loss_mean"].values.tolist() == pytest.approx(expected_mean)
    comm.Barrier()
    if comm.rank == 0:
        df = csv_frame(tmp_path / "out" / "metrics.csv")
        assert df["step"].tolist() == list(range(STEPS))
        assert (tmp_path / "out" / "report.md").is_file()
        assert (tmp_path / "out" / "train.h5").is_file()
