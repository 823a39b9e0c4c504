"""MLflow backend under real mpiexec: one run from rank 0, raw values as ``X/local``.

The tracking store is a sqlite file in a directory shared by all ranks.
Results are read on rank 0, broadcast, and asserted on every rank.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

MPI = pytest.importorskip("mpi4py.MPI")
pytest.importorskip("mlflow", reason="mlflow is an optional dependency")


def test_one_run_from_rank_zero(tmp_path, monkeypatch):
    from ezpz.history import History

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    shared = Path(comm.bcast(str(tmp_path), root=0))
    uri = f"sqlite:///{shared / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")

    history = History(
        backends="mlflow",
        project_name="ezpz-mpi-mlflow",
        report_dir=shared / "r",
        config={"data": {"batch": 16}},
    )
    steps = 4
    for step in range(steps):
        history.update({"train/loss": float(10 * rank + step)}, step=step)
    backend = history.tracker.get_backend("mlflow")
    report_ok = history.tracker.finish().ok
    history.close()
    comm.Barrier()
    everyone = comm.allgather({"has_backend": backend is not None, "report_ok": report_ok})

    result: dict | str = {}
    if rank == 0:
        try:
            from mlflow import MlflowClient

            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("ezpz-mpi-mlflow")
            runs = client.search_runs([exp.experiment_id])

            def hist(key):
                got = client.get_metric_history(runs[0].info.run_id, key)
                return sorted((m.step, m.value) for m in got)

            result = {
                "runs": len(runs),
                "params": dict(runs[0].data.params),
                "local": hist("train/loss/local"),
                "mean": hist("train/loss/mean"),
                "max": hist("train/loss/max"),
                "std": hist("train/loss/std"),
                "raw": hist("train/loss"),
            }
        except Exception as exc:
            result = f"{type(exc).__name__}: {exc}"
    result = comm.bcast(result, root=0)

    assert everyone[0]["has_backend"]
    assert not any(f["has_backend"] for f in everyone[1:])
    assert all(f["report_ok"] for f in everyone)
    assert isinstance(result, dict), result
    assert result["runs"] == 1
    assert result["params"]["config.data.batch"] == "16"
    assert result["params"]["ezpz.world_size"] == str(size)
    tens = [10 * r for r in range(size)]
    assert result["local"] == [(s, float(s)) for s in range(steps)]
    assert result["mean"] == [(s, pytest.approx(statistics.fmean(tens) + s)) for s in range(steps)]
    assert result["max"] == [(s, float(10 * (size - 1) + s)) for s in range(steps)]
    assert [v for _, v in result["std"]] == pytest.approx([statistics.pstdev(tens)] * steps)
    assert result["raw"] == []  # with statistics, the raw value is only under /local
