"""History end to end under mpiexec: cross-rank statistics as users read them back.

All assertions run on allgathered (identical) data, so they pass or fail on
every rank together.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.mpi

MPI = pytest.importorskip("mpi4py.MPI")


@pytest.fixture
def shared_dir(tmp_path):
    return MPI.COMM_WORLD.bcast(str(tmp_path), root=0)


def make_history(shared_dir, **kw):
    from ezpz.history import History

    kw.setdefault("backends", "none")
    kw.setdefault("report_enabled", False)
    return History(report_dir=shared_dir, **kw)


def per_step_values(comm, rows):
    """rows: this rank's list of {key: value} per step -> {key: [per-step arrays over ranks]}."""
    every = comm.allgather(rows)
    out: dict[str, list[np.ndarray]] = {}
    for step in range(len(rows)):
        keys = dict.fromkeys(k for rank_rows in every for k in rank_rows[step])
        for key in keys:
            vals = [r[step][key] for r in every if key in r[step]]
            out.setdefault(key, []).append(np.array(vals, dtype=float))
    return out


def test_statistics_match_numpy_and_are_identical(shared_dir):
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    hist = make_history(shared_dir)
    assert hist.distributed
    rows, lines = [], []
    for step in range(8):
        rng = np.random.default_rng(100 * step + rank)
        row = {
            "loss": float(rng.normal(2.0, 0.5)),
            "acc": float(rng.random()),
            "dt": 0.01 * (1 + rank) + 1e-4 * step,
            "lr": 1e-3 / (1 + step),
            "train/big": 1e5 + 1e-3 * float(rng.normal()),
        }
        rows.append(row)
        lines.append(hist.update(row, step=step))
    ref = per_step_values(comm, rows)
    view = hist.history
    for key, per_step in ref.items():
        for suffix, fn in (("mean", np.mean), ("max", np.max), ("min", np.min), ("std", np.std)):
            want = np.array([fn(v) for v in per_step])
            got = np.asarray(view[f"{key}/{suffix}"])
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15, err_msg=f"{key}/{suffix}")
        np.testing.assert_array_equal(view[key], [v[rank] for v in per_step])  # raw: this rank's
    assert np.all(np.asarray(view["lr/std"]) == 0.0)
    # Every rank returns the same console line and holds the same statistics.
    stats = {
        k: np.asarray(view[k]).tobytes()
        for k in view
        if k.rsplit("/", 1)[-1] in {"mean", "std", "max", "min"}
    }
    every = comm.allgather((lines, stats))
    assert all(e == every[0] for e in every)
    assert "loss=" in lines[-1] and "(±" in lines[-1]
    hist.close()
    # Rank 0's JSONL carries the statistics of every step.
    if rank == 0:
        with open(hist.jsonl_path) as fh:
            records = [r for r in map(json.loads, fh) if "_event" not in r]
        assert len(records) == 8
        flat = json.dumps(records[-1])
        assert "loss/mean" in flat and "big/std" in flat
    comm.Barrier()


def test_mismatched_keys_and_nonfinite_through_history(shared_dir):
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    hist = make_history(shared_dir)
    rows = []
    for step in range(6):
        row = {"loss": float(rank + step)}
        if rank == 0 and step % 2 == 0:
            row["eval/acc"] = 0.5 + 0.1 * step
        if step == 3 and rank == size - 1:
            row["loss"] = float("nan")
        if rank % 2 == 1:
            row = dict(reversed(list(row.items())))
        rows.append(row)
        hist.update(row, step=step)
    view = hist.history
    loss_mean = np.asarray(view["loss/mean"])
    want = [np.mean([r + s for r in range(size)]) for s in range(6)]
    assert np.isnan(loss_mean[3])
    np.testing.assert_allclose(np.delete(loss_mean, 3), np.delete(want, 3), rtol=1e-12)
    assert np.isnan(np.asarray(view["loss/std"])[3]) and np.isnan(np.asarray(view["loss/max"])[3])
    acc_mean = np.asarray(view["eval/acc/mean"])
    np.testing.assert_allclose(
        acc_mean, [0.5, 0.7, 0.9], rtol=1e-12
    )  # only rank 0's, per eval step
    if size > 1:
        np.testing.assert_array_equal(np.asarray(view["eval/acc/count"]), [1.0, 1.0, 1.0])
    nonfinite = np.asarray(view["loss/nonfinite"])
    assert nonfinite[~np.isnan(nonfinite)].tolist() == [1.0]
    suffixes = {"mean", "max", "min", "std", "count", "nonfinite"}
    every = comm.allgather(
        {k: np.asarray(view[k]).tobytes() for k in view if k.rsplit("/", 1)[-1] in suffixes}
    )
    assert all(e == every[0] for e in every)
    hist.close()


def test_hierarchical_history_equals_flat(shared_dir, monkeypatch):
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    flat = make_history(shared_dir)
    monkeypatch.setenv("EZPZ_HIERARCHICAL_THRESHOLD", "1")
    monkeypatch.setenv("EZPZ_RANKS_PER_NODE", "2")
    hier = make_history(shared_dir)
    assert hier._reducer.hierarchical and not flat._reducer.hierarchical
    for step in range(5):
        rng = np.random.default_rng(step * 10 + rank)
        row = {"loss": float(rng.normal()), "x": 3e8 + float(rng.normal())}
        flat.update(row, step=step)
        hier.update(row, step=step)
    for key in ("loss", "x"):
        for suffix in ("mean", "max", "min", "std"):
            np.testing.assert_allclose(
                hier.history[f"{key}/{suffix}"], flat.history[f"{key}/{suffix}"], rtol=1e-12, atol=0
            )
    flat.close()
    hier.close()


@pytest.mark.parametrize("how", ["argument", "EZPZ_NO_DISTRIBUTED_HISTORY", "EZPZ_LOCAL_HISTORY"])
def test_statistics_switch_off(shared_dir, monkeypatch, how):
    kw = {}
    if how == "argument":
        kw["distributed_history"] = False
    else:
        monkeypatch.setenv(how, "1")
    hist = make_history(shared_dir, **kw)
    assert not hist.distributed
    hist.update({"loss": float(MPI.COMM_WORLD.Get_rank())}, step=0)
    assert "loss" in hist.history and "loss/mean" not in hist.history
    hist.close()


def test_sub_communicator_and_rank_extrema(shared_dir):
    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    stage = world.Split(color=rank % 2, key=rank)
    hist = make_history(shared_dir, comm=stage, extrema=("dt",), jsonl_enabled=False)
    slow = stage.Get_size() - 1  # the last rank of each stage straggles
    for step in range(3):
        dt = 9.0 if stage.Get_rank() == slow else 1.0 + stage.Get_rank()
        hist.update({"dt": dt, "loss": float(rank)}, step=step)
    members = [r for r, c in enumerate(world.allgather(rank % 2)) if c == rank % 2]
    if stage.Get_size() > 1:
        np.testing.assert_allclose(hist.history["loss/mean"], [np.mean(members)] * 3)
        assert np.asarray(hist.history["dt/max_rank"]).tolist() == [float(slow)] * 3
        assert np.asarray(hist.history["dt/min_rank"]).tolist() == [0.0] * 3
        # Only opted-in keys get rank columns.
        assert "loss/max_rank" not in hist.history and "loss/min_rank" not in hist.history
    hist.close()
    stage.Free()
