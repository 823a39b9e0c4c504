"""W&B backend under real mpiexec: one offline run on rank 0, nothing elsewhere.

Each rank points WANDB_DIR at its own folder; afterwards only rank 0's holds
a run, no other rank has a wandb backend or a wandb-core process, and the
run's history (read back with ``wandb leet inspect --json``) carries rank 0's
raw values and the cross-rank statistics. Results are gathered and asserted
on every rank, so a failure fails everywhere and never strands a rank.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

MPI = pytest.importorskip("mpi4py.MPI")
pytest.importorskip("wandb", reason="wandb is an optional dependency")


def _read_history(run_dir: Path) -> list[dict]:
    (log_file,) = run_dir.glob("run-*.wandb")
    out = subprocess.run(
        [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(log_file)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def _wandb_children() -> list[str]:
    import psutil

    return [p.name() for p in psutil.Process().children(recursive=True) if "wandb" in p.name()]


def test_one_run_on_rank_zero_with_statistics(tmp_path, monkeypatch):
    from ezpz.history import History

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    shared = Path(comm.bcast(str(tmp_path), root=0))
    mine = shared / f"rank{rank}"
    mine.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(mine))
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    if "wandb" in sys.modules:  # wandb caches its settings per process
        sys.modules["wandb"].teardown()

    history = History(backends="wandb", project_name="ezpz-mpi-wandb", report_dir=shared / "r")
    steps = 3
    for step in range(steps):
        history.update({"loss": float(rank + step)}, step=step)
    has_backend = history.tracker.get_backend("wandb") is not None
    report_ok = history.tracker.finish().ok
    history.close()
    comm.Barrier()

    facts = {
        "rank": rank,
        "has_backend": has_backend,
        "report_ok": report_ok,
        "run_dirs": len(list((mine / "wandb").glob("offline-run-*"))),
        "wandb_dir_exists": (mine / "wandb").exists(),
        "children": _wandb_children() if rank else [],
    }
    everyone = comm.allgather(facts)
    rows: list[dict] | str = []
    if rank == 0:
        try:
            (run_dir,) = (mine / "wandb").glob("offline-run-*")
            rows = _read_history(run_dir)
        except Exception as exc:  # reported on every rank below
            rows = f"{type(exc).__name__}: {exc}"
    rows = comm.bcast(rows, root=0)

    assert everyone[0]["has_backend"] and everyone[0]["run_dirs"] == 1
    assert all(f["report_ok"] for f in everyone)
    for other in everyone[1:]:
        assert not other["has_backend"], other
        assert not other["wandb_dir_exists"], other
        assert other["children"] == [], other
    assert isinstance(rows, list), rows
    assert [r["_step"] for r in rows] == list(range(steps))
    ranks = list(range(size))
    for row in rows:
        s = row["_step"]
        assert row["loss"] == pytest.approx(0 + s)  # rank 0's own value
        assert row["loss/mean"] == pytest.approx(statistics.fmean(ranks) + s)
        assert row["loss/max"] == pytest.approx(size - 1 + s)
        assert row["loss/min"] == pytest.approx(s)
        assert row["loss/std"] == pytest.approx(statistics.pstdev(ranks), abs=1e-12)
