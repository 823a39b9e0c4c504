"""The console line under real mpiexec: identical on every rank, showing cross-rank means."""

from __future__ import annotations

import numpy as np
import pytest

from ezpz.history import History

pytestmark = pytest.mark.mpi

MPI = pytest.importorskip("mpi4py.MPI")


def test_summary_line_identical_on_every_rank(tmp_path):
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    history = History(backends="none", report_dir=comm.bcast(str(tmp_path)), jsonl_overwrite=True)
    lines = []
    for step in (8, 180):
        metrics = {"iter": step, "loss": 0.1 * (rank + 1), "lr": 5.9e-5}
        lines.append(history.update(metrics, step=step, precision=3))
    losses = 0.1 * (np.arange(size) + 1)
    mean, std = losses.mean(), losses.std()
    expected = [
        f"iter={step:<3} loss={mean:.3f}(±{std:>6.{3 if std < 0.1 else 2}f}) lr=0.000059"
        for step in (8, 180)
    ]
    assert lines == expected
    assert comm.allgather(lines) == [lines] * size
