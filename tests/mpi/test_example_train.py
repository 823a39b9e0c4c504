"""The example training job end to end under mpiexec (DDP over gloo), at tiny size."""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("torch", reason="the example trains a torch model")
MPI = pytest.importorskip("mpi4py.MPI")
xr = pytest.importorskip("xarray")

from ezpz.examples import train  # noqa: E402
from ezpz.history.keys import STEP_FIELD  # noqa: E402

pytestmark = pytest.mark.mpi

STEPS, EVAL_EVERY = 6, 3


def test_tiny_ddp_run_leaves_a_complete_output_folder(tmp_path):
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    outdir = comm.bcast(str(tmp_path / "run"), root=0)
    # fmt: off
    argv = [
        "--steps", str(STEPS), "--eval-every", str(EVAL_EVERY), "--log-every", "2",
        "--batch-size", "8", "--hidden", "16", "--depth", "1", "--eval-size", "64",
        "--backends", "csv", "--outdir", outdir, "--warmup", "0",
    ]
    # fmt: on
    got = train.main(argv)
    assert str(got) == outdir
    comm.Barrier()
    if rank != 0:
        return
    run = tmp_path / "run"
    for name in ("train.h5", "eval.h5", "report.md", "metrics.jsonl", "metrics.csv", "ranks.h5"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    with xr.open_dataset(run / "train.h5") as ds:
        assert ds.sizes["draw"] == STEPS
        for var in ("loss", "accuracy", "dtf", "dtb", "dt", "samples_per_sec", "tflops", "lr"):
            assert var in ds.data_vars, var
        assert ds["step"].values.tolist() == list(range(STEPS))
        if size > 1:  # statistics across ranks; ranks draw different batches
            assert "loss_std" in ds.data_vars
            assert float(ds["loss_std"].max()) > 0.0
            assert float(ds["lr_std"].max()) == 0.0  # a replicated hyperparameter
    with xr.open_dataset(run / "eval.h5") as ds:
        assert ds.sizes["draw"] == STEPS // EVAL_EVERY
        assert {"loss", "accuracy"} <= set(ds.data_vars)
        assert ((ds["accuracy"] >= 0) & (ds["accuracy"] <= 1)).all()
    assert list((run / "plots" / "mplot" / "train").glob("*.png"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    steps_logged = [r[STEP_FIELD] for r in records if STEP_FIELD in r]  # events aside
    assert sorted(set(steps_logged)) == list(range(STEPS))
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    stepped = [r for r in rows if r.get("step")]  # StopWatch timings may add step-less rows
    assert len(stepped) == STEPS + STEPS // EVAL_EVERY  # one row per update
    assert any(r.get("timing/eval") for r in rows)  # StopWatch(wbtag=...) reached the tracker
    assert all(r["train/loss"] for r in stepped[:EVAL_EVERY])  # first rows: train only
