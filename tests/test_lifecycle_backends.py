"""A run resumed across jobs is one wandb run and one MLflow run (issue 10).

Real ``mpiexec -n 2`` jobs (``tests/lifecycle_job.py``) with real signals;
wandb offline, read back with wandb's own ``wandb leet inspect``; a real
``mlflow server`` on 127.0.0.1 with sqlite (tests/mlflow_server.py), shared
with the other server tests through tests/conftest.py's ``mlflow_server``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_lifecycle_restart import (  # noqa: E402
    MPIEXEC,
    finish,
    jsonl_lines,
    launch,
    wait_for_step,
)
from wandb_log import inspect_log  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not MPIEXEC.exists(), reason="needs the mpich mpiexec in the venv"),
    pytest.mark.timeout(600),
]
EVERY = ["--ckpt-every", "10", "--sleep", "0.005"]


def test_wandb_offline_one_run_id_across_segments(tmp_path):
    pytest.importorskip("wandb")
    work = tmp_path / "job"
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_SILENT": "true"}
    (tmp_path / "wb").mkdir()
    proc = launch(work, "--backends", "wandb", "--resume", "auto", *EVERY, **env)
    wait_for_step(proc, work, 30)
    proc.send_signal(signal.SIGTERM)
    finish(proc, work, timeout=60)
    _path, lines = jsonl_lines(work / "report")
    last_before = max(r["_step"] for r in lines if "_step" in r)
    steps = 60
    proc = launch(
        work, "--backends", "wandb", "--resume", "auto", "--steps", str(steps), "--finalize",
        *EVERY, **env,
    )  # fmt: skip
    assert finish(proc, work, timeout=240) == 0, (work / "job.log").read_text()
    path, _lines = jsonl_lines(work / "report")
    run_id = path.stem
    logs = sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2  # one directory per job, both of the same run
    assert {p.name for p in logs} == {f"run-{run_id}.wandb"}
    seen: list[int] = []
    exit_codes = []
    for log in logs:
        records = inspect_log(log)
        for r in records:
            if r["type"] == "history":
                item = r["history"]["item"]
                if "train/loss" in item:
                    seen.append(int(item["_step"]))
            elif r["type"] == "run":
                assert r["run"]["run_id"] == run_id
                assert r["run"].get("display_name") == "lifecycle-test"
            elif r["type"] == "exit":
                exit_codes.append(r["exit"].get("exit_code", 0))
    assert len(seen) == len(set(seen))  # no step twice
    assert set(range(last_before + 1, steps)) <= set(seen)
    assert max(seen) == steps - 1 and 0 in seen
    assert exit_codes and exit_codes[0] == 1 and exit_codes[-1] == 0


def test_mlflow_one_run_across_sigkill_sigterm_and_finish(tmp_path, mlflow_server):
    # mlflow_server: the session's server (tests/conftest.py)
    from mlflow import MlflowClient

    work = tmp_path / "job"
    env = {
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "MLFLOW_EXPERIMENT_NAME": "ezpz-lifecycle",
        "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
    }
    # One request per step: pace the job like a real one (MLflow keeps up).
    args = ["--backends", "mlflow", "--resume", "auto", "--ckpt-every", "5", "--sleep", "0.05"]
    proc = launch(work, *args, **env)
    wait_for_step(proc, work, 12)
    os.kill(int((work / "pid.0").read_text()), signal.SIGKILL)  # leaves the run RUNNING
    finish(proc, work, timeout=60)
    # A slow server on a busy machine: give the SIGTERM drain the default grace.
    proc = launch(work, *args, **env, EZPZ_SHUTDOWN_GRACE="20")
    wait_for_step(proc, work, 20)
    proc.send_signal(signal.SIGTERM)  # the run is marked KILLED
    finish(proc, work, timeout=90)
    path, lines = jsonl_lines(work / "report")
    last_before = max(r["_step"] for r in lines if "_step" in r)
    second = [r["_step"] for r in lines if "_step" in r][-1]
    steps = 36
    proc = launch(work, *args, "--steps", str(steps), "--finalize", **env)
    assert finish(proc, work, timeout=240) == 0, (work / "job.log").read_text()

    client = MlflowClient(tracking_uri=mlflow_server.url)
    exp = client.get_experiment_by_name("ezpz-lifecycle")
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`ezpz.run_id` = '{path.stem}'"
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "lifecycle-test"
    history = client.get_metric_history(run.info.run_id, "train/loss/mean")
    got = [m.step for m in history]
    assert len(got) == len(set(got))  # no step twice
    # What a SIGKILL found queued is lost (the JSONL has it); a SIGTERM drains.
    assert second in got
    assert set(range(last_before + 1, steps)) <= set(got)  # the last segment's new steps
