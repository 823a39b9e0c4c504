"""ranks.h5 under real mpiexec: the mpio path, the gather fallback, rank-0-only finalize.

Run in both venvs: the default one (serial h5py: mpio cases skip, the
fallback runs) and .venv-phdf5 (h5py with MPI: both run).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from h5_drivers import DRIVERS

from ezpz.history import History

pytestmark = pytest.mark.mpi

MPI = pytest.importorskip("mpi4py.MPI")


def _shared_dir(tmp_path: Path) -> Path:
    return Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))


def _history(shared: Path, monkeypatch, driver: str, every: int) -> History:
    monkeypatch.setenv("EZPZ_RANKS_H5_DRIVER", driver)
    monkeypatch.setenv("EZPZ_RANKS_FLUSH_EVERY", str(every))
    return History(report_dir=shared / "hist", backends="none")


def _log(hist: History, steps: int, *, extra_on_odd: bool = False) -> None:
    rank = hist.rank
    for i in range(steps):
        metrics = {"train/loss": rank * 1000.0 + i, "train/lr": 0.1}
        if extra_on_odd and rank % 2:
            metrics["train/extra"] = -float(rank)
        hist.update(metrics, step=10 * i)
        if i % 3 == 0:
            hist.update({"eval/acc": rank + i / 100}, step=10 * i)


def _finish(hist: History) -> None:
    MPI.COMM_WORLD.Barrier()
    hist.close()


def _str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


@pytest.mark.parametrize("driver", DRIVERS)
def test_all_ranks_finalize_writes_every_row(tmp_path, monkeypatch, driver):
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, driver, every=7)
    size = hist.world_size
    _log(hist, 25)
    assert hist._rank_flusher.driver == driver  # the path under test, not a silent fallback
    result = hist.finalize(outdir=shared / "out", plot=False, report=False)
    # every rank gets the datasets back; only rank 0 wrote files
    assert set(result) == {"train", "eval"} and result["train"].sizes["draw"] == 25
    MPI.COMM_WORLD.Barrier()
    if hist.rank == 0:
        with h5py.File(shared / "out" / "ranks.h5", "r") as f:
            assert f.attrs["complete"] == 1 and f.attrs["world_size"] == size
            assert _str(f.attrs["run_id"]) == hist.run_id
            loss = f["train/loss"]
            assert loss.shape == (size, 25) and _str(loss.attrs["full_key"]) == "train/loss"
            for r in range(size):
                np.testing.assert_array_equal(loss[r], r * 1000.0 + np.arange(25))
                np.testing.assert_array_equal(f["train/step"][r], 10 * np.arange(25))
            np.testing.assert_array_equal(f["train/rows"][:], [25] * size)
            assert np.all(np.isfinite(f["train/time"][:]))
            assert "loss_mean" not in f["train"]  # statistics live in train.h5, not here
            acc = f["eval/acc"]
            assert acc.shape == (size, 9)
            for r in range(size):
                np.testing.assert_allclose(acc[r], r + np.arange(0, 25, 3) / 100)
        # the staging file was moved, not left behind
        assert not list((shared / "hist").glob("*-ranks.h5"))
    _finish(hist)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("all_ranks", [None, False])
def test_rank0_only_finalize_completes(tmp_path, monkeypatch, driver, all_ranks):
    """The seed's ``if rank == 0: history.finalize()``: no hang, flushed rows kept."""
    monkeypatch.setenv("EZPZ_FINALIZE_WAIT", "0.5")
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, driver, every=10)
    size = hist.world_size
    _log(hist, 25)  # periodic flushes at update 10, 20, 30 (updates include eval)
    if hist.rank == 0:
        hist.finalize(outdir=shared / "out", plot=False, report=False, all_ranks=all_ranks)
        with h5py.File(shared / "out" / "ranks.h5", "r") as f:
            assert f.attrs["complete"] == 0
            rows = f["train/rows"][:]
            assert rows[0] == 25  # rank 0 adds its own unflushed rows
            loss = f["train/loss"]
            np.testing.assert_array_equal(loss[0], np.arange(25.0))
            for r in range(1, size):
                n = int(rows[r])
                assert 0 < n < 25  # what the last periodic flush had
                np.testing.assert_array_equal(loss[r, :n], r * 1000.0 + np.arange(n))
                assert np.isnan(loss[r, n:]).all()
    _finish(hist)


@pytest.mark.parametrize("driver", DRIVERS)
def test_periodic_flush_bounds_what_is_unwritten(tmp_path, monkeypatch, driver):
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, driver, every=4)
    for i in range(8):  # two flushes, no finalize
        hist.update({"loss": hist.rank + i / 10}, step=i)
    MPI.COMM_WORLD.Barrier()
    if hist.rank == 0:
        staging = shared / "hist" / f"{hist.run_id}-ranks.h5"
        with h5py.File(staging, "r") as f:
            assert f.attrs["complete"] == 0
            np.testing.assert_array_equal(f["history/rows"][:], [8] * hist.world_size)
            for r in range(hist.world_size):
                np.testing.assert_allclose(f["history/loss"][r], r + np.arange(8) / 10)
    _finish(hist)


def _staging_rows(shared: Path, hist: History) -> list[int]:
    MPI.COMM_WORLD.Barrier()
    rows: list[int] = []
    if hist.rank == 0:
        with h5py.File(shared / "hist" / f"{hist.run_id}-ranks.h5", "r") as f:
            rows = f["history/rows"][:].tolist()
    return MPI.COMM_WORLD.bcast(rows)


def test_time_floor_stretches_the_flush_interval_on_every_rank(tmp_path, monkeypatch):
    """Fast steps: after the first flush the interval grows (rank 0's proposal, agreed)."""
    monkeypatch.setenv("EZPZ_RANKS_FLUSH_SECONDS", "3600")
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, "gather", every=4)
    for i in range(4):
        hist.update({"loss": float(i)}, step=i)
    assert _staging_rows(shared, hist) == [4] * hist.world_size  # the first flush, on time
    flusher = hist._rank_flusher
    assert flusher.seconds == 3600.0
    # Microsecond steps against an hour: stretched to its cap (100x), identical everywhere.
    assert flusher.due == 4 + 400
    assert MPI.COMM_WORLD.allgather(flusher.due) == [flusher.due] * hist.world_size
    for i in range(4, 40):
        hist.update({"loss": float(i)}, step=i)
    assert _staging_rows(shared, hist) == [4] * hist.world_size  # not flushed again
    if hist.rank == 0:  # a wide layout: the interval stays small enough for rank 0's memory
        wide = {"g": ([f"c{i}" for i in range(100_000)], 0, 0)}
        proposal = flusher._next_interval(wide)
        assert 4 <= proposal < 36 * 100  # the time floor alone would give 3600
        assert proposal * 100_002 * 8 * hist.world_size <= 64 << 20
    _finish(hist)


def test_an_interval_set_in_updates_is_kept(tmp_path, monkeypatch):
    """EZPZ_RANKS_FLUSH_EVERY alone: no time floor, a flush every N updates."""
    monkeypatch.delenv("EZPZ_RANKS_FLUSH_SECONDS", raising=False)
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, "gather", every=4)
    for i in range(12):
        hist.update({"loss": float(i)}, step=i)
    assert hist._rank_flusher.seconds == 0.0
    assert hist._rank_flusher.due == 16
    assert _staging_rows(shared, hist) == [12] * hist.world_size
    _finish(hist)


def test_default_interval_has_a_time_floor(tmp_path, monkeypatch):
    monkeypatch.delenv("EZPZ_RANKS_FLUSH_EVERY", raising=False)
    monkeypatch.delenv("EZPZ_RANKS_FLUSH_SECONDS", raising=False)
    shared = _shared_dir(tmp_path)
    hist = History(report_dir=shared / "hist", backends="none")
    hist.update({"loss": 1.0}, step=0)
    assert (hist._rank_flusher.every, hist._rank_flusher.seconds) == (1000, 10.0)
    _finish(hist)


@pytest.mark.parametrize("driver", DRIVERS)
def test_ranks_with_different_keys(tmp_path, monkeypatch, driver):
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, driver, every=5)
    _log(hist, 12, extra_on_odd=True)
    hist.finalize(outdir=shared / "out", plot=False, report=False)
    MPI.COMM_WORLD.Barrier()
    if hist.rank == 0:
        with h5py.File(shared / "out" / "ranks.h5", "r") as f:
            extra = f["train/extra"]
            for r in range(hist.world_size):
                if r % 2:
                    np.testing.assert_array_equal(extra[r], [-float(r)] * 12)
                else:
                    assert np.isnan(extra[r]).all()
            assert f["train/loss"].shape == (hist.world_size, 12)
    _finish(hist)


@pytest.mark.parametrize("driver", DRIVERS)
def test_finalize_twice_stays_complete(tmp_path, monkeypatch, driver):
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, driver, every=6)
    _log(hist, 10)
    hist.finalize(outdir=shared / "out1", plot=False, report=False)
    _log(hist, 4)  # the run goes on after a first finalize
    hist.finalize(outdir=shared / "out2", plot=False, report=False)
    MPI.COMM_WORLD.Barrier()
    if hist.rank == 0:
        with h5py.File(shared / "out1" / "ranks.h5", "r") as f:
            assert f["train/loss"].shape == (hist.world_size, 10)
        with h5py.File(shared / "out2" / "ranks.h5", "r") as f:
            assert f.attrs["complete"] == 1
            loss = f["train/loss"]
            assert loss.shape == (hist.world_size, 14)
            for r in range(hist.world_size):
                expected = np.concatenate([np.arange(10.0), np.arange(4.0)]) + r * 1000
                np.testing.assert_array_equal(loss[r], expected)
    _finish(hist)


def test_history_wires_the_flush_hook(tmp_path, monkeypatch):
    """update() flushes ranks' rows periodically (History owns the flusher)."""
    monkeypatch.setenv("EZPZ_RANKS_FLUSH_EVERY", "3")
    shared = _shared_dir(tmp_path)
    hist = History(report_dir=shared / "hist", backends="none")
    for i in range(3):
        hist.update({"loss": float(i)}, step=i)
    MPI.COMM_WORLD.Barrier()
    assert (shared / "hist" / f"{hist.run_id}-ranks.h5").exists()
    _finish(hist)


def test_failed_flush_does_not_stop_training(tmp_path, monkeypatch, caplog):
    """Rank 0 cannot write the staging file once: update() goes on, finalize is complete."""
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, "gather", every=3)
    real_file = h5py.File
    failures = []

    class Flaky(real_file):  # a subclass: isinstance(x, h5py.File) keeps working
        def __init__(self, path, *args, **kwargs):
            if str(path).endswith("-ranks.h5") and not failures:
                failures.append(path)
                raise OSError("disk quota exceeded")
            super().__init__(path, *args, **kwargs)

    if hist.rank == 0:
        monkeypatch.setattr(h5py, "File", Flaky)
    _log(hist, 6)  # flushes at update 3 (fails on rank 0), 6, ...
    if hist.rank == 0:
        assert failures and "periodic flush failed" in caplog.text
    hist.finalize(outdir=shared / "out", plot=False, report=False)
    MPI.COMM_WORLD.Barrier()
    if hist.rank == 0:
        with real_file(shared / "out" / "ranks.h5", "r") as f:
            assert f.attrs["complete"] == 1
            for r in range(hist.world_size):
                np.testing.assert_array_equal(f["train/loss"][r], r * 1000.0 + np.arange(6))
    _finish(hist)


def test_rank0_only_before_any_flush(tmp_path, monkeypatch):
    """No periodic flush yet: ranks.h5 holds rank 0's rows, the others are empty."""
    shared = _shared_dir(tmp_path)
    hist = _history(shared, monkeypatch, "gather", every=0)
    _log(hist, 6)
    if hist.rank == 0:
        hist.finalize(outdir=shared / "out", plot=False, report=False, all_ranks=False)
        with h5py.File(shared / "out" / "ranks.h5", "r") as f:
            assert f.attrs["complete"] == 0 and f.attrs["world_size"] == hist.world_size
            np.testing.assert_array_equal(f["train/rows"][:], [6] + [0] * (hist.world_size - 1))
            np.testing.assert_array_equal(f["train/loss"][0], np.arange(6.0))
            assert np.isnan(f["train/loss"][1:]).all()
    _finish(hist)
