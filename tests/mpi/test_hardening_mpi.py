"""Issue 12 under real mpiexec: keys and big ints on every rank, exact steps in
ranks.h5 (items 1, 3, 16), and a rank that reaches finalize() late (item 21).

Runs at 2 and 4 ranks (tests/run_suites.py) and in the parallel-HDF5 venv.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from h5_drivers import DRIVERS

from ezpz.history import History

pytestmark = pytest.mark.mpi

MPI = pytest.importorskip("mpi4py.MPI")

BAD_KEY = os.fsdecode(b"file-\xe9")  # a lone surrogate, as from a latin-1 file name


def _shared_dir(tmp_path: Path) -> Path:
    return Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))


def test_bad_keys_and_big_ints_never_make_ranks_diverge(tmp_path):
    """Before: rank 0 raised 'str is not valid UTF-8' (JSONL) while the others went on;
    on one rank 2**64 raised 'Integer exceeds 64-bit range'."""
    shared = _shared_dir(tmp_path)
    hist = History(report_dir=shared / "hist", backends="none")
    rank, size = hist.rank, hist.world_size
    for step in range(3):
        hist.update(
            {BAD_KEY: float(rank), "a\x00b": 1.0, "_step": 99, "tokens": 2**64 + rank},
            step=step,
        )
    keys = sorted(hist.history)
    assert MPI.COMM_WORLD.allgather(keys) == [keys] * size  # the same keys everywhere
    assert "file-\ufffd/mean" in keys and "a\ufffdb" in keys and "_step" not in keys
    np.testing.assert_allclose(hist.history["file-\ufffd/mean"], [(size - 1) / 2] * 3)
    np.testing.assert_array_equal(hist.history["tokens"], [float(2**64 + rank)] * 3)
    if rank == 0:
        from ezpz.history.jsonl import read_records

        rows = [r for r in read_records(hist.jsonl_path) if "_event" not in r]
        assert [r["_step"] for r in rows] == [0, 1, 2]
        assert all(r["tokens"] == float(2**64) for r in rows)
    hist.finalize(outdir=shared / "out", plot=False, report=False)
    MPI.COMM_WORLD.Barrier()
    hist.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_steps_beyond_2_53_are_exact_in_ranks_h5(tmp_path, monkeypatch, driver):
    """Before: steps went through float64 (store, Gatherv): 2**53 + 1 became 2**53."""
    monkeypatch.setenv("EZPZ_RANKS_H5_DRIVER", driver)
    monkeypatch.setenv("EZPZ_RANKS_FLUSH_EVERY", "2")
    shared = _shared_dir(tmp_path)
    steps = [2**53 + 1, 2**53 + 3, 2**62 + 1, 2**63 - 1]
    hist = History(report_dir=shared / "hist", backends="none")
    for step in steps:
        hist.update({"train/loss": float(hist.rank)}, step=step)
    result = hist.finalize(outdir=shared / "out", plot=False, report=False)
    assert result["step"].values.tolist() == steps
    MPI.COMM_WORLD.Barrier()
    if hist.rank == 0:
        with h5py.File(shared / "out" / "ranks.h5", "r") as f:
            assert f["train/step"].dtype == np.int64
            for r in range(hist.world_size):
                assert f["train/step"][r].tolist() == steps
        with h5py.File(shared / "out" / "train.h5", "r") as f:
            assert f["step"][:].tolist() == steps
    MPI.COMM_WORLD.Barrier()
    hist.close()


def test_a_late_rank_still_lands_in_ranks_h5(tmp_path, monkeypatch, caplog):
    """Before: a rank arriving EZPZ_FINALIZE_WAIT late made rank 0 write ranks.h5 alone,
    every other rank NaN (the on-time ones too), with only an INFO line.

    With 3+ ranks the on-time ones join, so rank 0 waits for the late one; with 2
    nobody joined in time, so rank 0 goes alone and names the missing rank.
    """
    monkeypatch.setenv("EZPZ_FINALIZE_WAIT", "0.5")
    monkeypatch.setenv("EZPZ_FINALIZE_TIMEOUT", "120")
    monkeypatch.setenv("EZPZ_RANKS_FLUSH_EVERY", "1000")  # nothing flushed before finalize
    shared = _shared_dir(tmp_path)
    hist = History(report_dir=shared / "hist", backends="none")
    size, rank = hist.world_size, hist.rank
    for i in range(5):
        hist.update({"train/loss": rank * 10.0 + i}, step=i)
    if rank == size - 1:
        time.sleep(2.0)  # checkpoint I/O, a straggler: well past EZPZ_FINALIZE_WAIT
    with caplog.at_level(logging.INFO, logger="ezpz"):
        hist.finalize(outdir=shared / "out", plot=False, report=False)
    MPI.COMM_WORLD.Barrier()
    if rank == 0:
        with h5py.File(shared / "out" / "ranks.h5", "r") as f:
            if size >= 3:
                assert "alone" not in caplog.text
                assert f.attrs["complete"] == 1
                for r in range(size):
                    np.testing.assert_array_equal(f["train/loss"][r], r * 10.0 + np.arange(5))
            else:
                warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
                assert any("rank(s) 1 did not reach finalize()" in r.getMessage() for r in warnings)
                assert f.attrs["complete"] == 0
    MPI.COMM_WORLD.Barrier()
    hist.close()
