"""ezpz 0.26 names under real mpiexec: readers on every rank, plots from rank 0 only, no hang."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ezpz.history import History

pytestmark = pytest.mark.mpi

MPI = pytest.importorskip("mpi4py.MPI")


def test_readers_plots_and_summarize_false_across_ranks(tmp_path):
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    root = Path(comm.bcast(str(tmp_path)))
    history = History(backends="none", report_dir=root / "rep")
    for step in range(6):
        out = history.update(
            {"train/loss": float(rank + step), "eval/acc": 0.5}, step=step, summarize=False
        )
        assert out == ""
    # every rank reads its own store: raw values are local, statistics cross-rank
    groups = history.groups
    assert groups["train"]["loss"].tolist() == [float(rank + s) for s in range(6)]
    np.testing.assert_allclose(groups["train"]["loss/mean"], (size - 1) / 2 + np.arange(6))
    grouped = history.get_grouped_datasets(warmup=2)
    assert grouped["train"].sizes["draw"] == 4
    assert "train_loss_mean" in history.get_dataset().data_vars
    # only rank 0 writes plots and the report; no collective is involved
    outdir = root / "plots"
    written = history.plot_all(outdir=outdir)
    history.tplot_all(outdir=outdir)
    if rank == 0:
        assert written["train"] and (outdir / "report.md").exists()
    else:
        assert written == {}
    comm.Barrier()
    pngs = sorted(p.name for p in (outdir / "plots" / "mplot" / "train").glob("*.png"))
    assert comm.allgather(pngs) == [pngs] * size and pngs == ["loss.png"]
    history.finalize(outdir=root / "final", save=False, plot=False)
    comm.Barrier()
    assert not list((root / "final").glob("*.h5"))
