"""Issue 12 item 9 under real mpiexec: finalize()'s files get the umask's mode.

Before the shared atomic-write helper, files written through a temporary
name (``train.h5``, ``eval.h5``, ``metrics.jsonl``) were 0600 whatever the
umask, because ``tempfile.mkstemp`` creates them so. ``ranks.h5`` exists
only on several ranks, hence this test under mpiexec.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ezpz.history import History

pytestmark = pytest.mark.mpi

MPI = pytest.importorskip("mpi4py.MPI")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_finalize_outputs_get_0644_under_umask_022(tmp_path, umask_022):
    shared = Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))
    out = shared / "out"
    hist = History(report_dir=shared / "hist", outdir=out, backends="none", config={"seed": 1})
    for i in range(6):
        hist.update({"train/loss": 1.0 / (i + 1) + hist.rank, "train/lr": 1e-3}, step=i)
        if i % 3 == 0:
            hist.update({"eval/acc": 0.1 * i + hist.rank}, step=i)
    hist.finalize(plot=False)
    hist.close()
    MPI.COMM_WORLD.Barrier()
    if hist.rank == 0:
        files = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
        names = {p.name for p in files}
        assert {"train.h5", "eval.h5", "metrics.jsonl", "report.md", "ranks.h5"} <= names, names
        modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
        assert {k: v for k, v in modes.items() if v != oct(0o644)} == {}, modes
    MPI.COMM_WORLD.Barrier()
