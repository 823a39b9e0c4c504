"""Run lifecycle under a real ``mpiexec -n 2`` with real signals (issue 10).

Each job is ``tests/lifecycle_job.py`` in a subprocess (mpich's Hydra
``mpiexec`` forwards SIGTERM to every rank), so a hang fails through a
timeout instead of stalling the suite. The values every rank logs are a
function of step and rank, so an interrupted-and-resumed run can be compared
with one uninterrupted run of the same steps.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

MPIEXEC = Path(sys.executable).with_name("mpiexec")
JOB = Path(__file__).with_name("lifecycle_job.py")
sys.path.insert(0, str(Path(__file__).parent))
from lifecycle_job import values  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not MPIEXEC.exists(), reason="needs the mpich mpiexec in the venv"),
    pytest.mark.timeout(600),
]
GRACE = 5


def launch(work: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "job.log", "ab")  # noqa: SIM115 - the child keeps it
    full_env = {**os.environ, "EZPZ_SHUTDOWN_GRACE": str(GRACE), **env}
    for name in ("EZPZ_TRACKER_BACKENDS", "EZPZ_RESUME", "EZPZ_HANDLE_SIGNALS", "EZPZ_RUN_NAME"):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.Popen(
        [str(MPIEXEC), "-n", "2", sys.executable, str(JOB), "--dir", str(work), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=full_env,
    )


def returned_steps(work: Path) -> list[int]:
    path = work / "returned.txt"
    if not path.exists():
        return []
    return [int(x) for x in path.read_text().split()]


def wait_for_step(
    proc: subprocess.Popen[bytes],
    work: Path,
    step: int,
    timeout: float = 180,
    between_checkpoints: int = 0,
) -> None:
    """Until rank 0 has returned from update() at ``step`` (or later).

    ``between_checkpoints``: also wait until the last step is a few steps past
    a multiple of it, so that a job stopped now logged steps after its last
    checkpoint (the restart logs them again: the superseding rule).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = returned_steps(work)
        near = not between_checkpoints or 2 <= (got[-1] if got else 0) % between_checkpoints <= 6
        if got and got[-1] >= step and near:
            return
        if proc.poll() is not None:
            pytest.fail(f"job ended early ({proc.returncode}):\n{(work / 'job.log').read_text()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"job did not reach step {step}:\n{(work / 'job.log').read_text()}")


def finish(proc: subprocess.Popen[bytes], work: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"job did not end within {timeout}s:\n{(work / 'job.log').read_text()}")


def jsonl_lines(report: Path) -> tuple[Path, list[dict]]:
    (path,) = sorted(report.glob("*.jsonl"))
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn line of a killed run
    return path, out


def csv_steps(path: Path) -> list[int]:
    with open(path, newline="") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh) if r.get("step")]


def test_sigterm_keeps_every_returned_update_and_ends_within_grace(tmp_path):
    work = tmp_path / "job"
    proc = launch(work, "--backends", "csv,slow")
    wait_for_step(proc, work, 150)  # the slow backend is ~6 s behind: more than the grace
    proc.send_signal(signal.SIGTERM)
    rc = finish(proc, work, timeout=GRACE + 25)
    assert rc != 0
    done = returned_steps(work)
    report = work / "report"
    path, lines = jsonl_lines(report)
    steps = [r["_step"] for r in lines if "_event" not in r]
    assert set(done) <= set(steps)
    assert steps == sorted(set(steps))  # each once
    events = [r["_event"] for r in lines if "_event" in r]
    assert events[0] == "start" and events[-1] == "interrupted"
    assert lines[-1]["signal"] == "SIGTERM"
    (metrics,) = report.glob("*/metrics.csv")
    assert set(done) <= set(csv_steps(metrics))
    # Every rank saved its unflushed per-rank values beside the run.
    run_id = path.stem
    assert (report / f"{run_id}-ranks.0.partial.npz").exists()
    assert (report / f"{run_id}-ranks.1.partial.npz").exists()


def test_user_handler_installed_before_history_still_runs(tmp_path):
    work = tmp_path / "job"
    proc = launch(work, "--backends", "csv", "--user-handler", "--sleep", "0.002")
    wait_for_step(proc, work, 20)
    proc.send_signal(signal.SIGTERM)
    finish(proc, work, timeout=GRACE + 25)
    assert (work / "user_handler_ran").read_text() == str(int(signal.SIGTERM))
    _path, lines = jsonl_lines(work / "report")
    assert lines[-1]["_event"] == "interrupted"  # ezpz saved the run first


def _ranks_by_step(path: Path, group: str, key: str) -> list[dict[int, float]]:
    import h5py

    with h5py.File(path, "r") as f:
        g = f[group]
        steps, vals = g["step"][:], g[key][:]
    out = []
    for r in range(steps.shape[0]):
        out.append({int(s): float(v) for s, v in zip(steps[r], vals[r], strict=True) if s >= 0})
    return out


def test_three_segments_equal_one_uninterrupted_run(tmp_path):
    xr = pytest.importorskip("xarray")
    steps, every = 150, ["--ckpt-every", "10", "--eval-every", "7", "--sleep", "0.002"]
    env = {"EZPZ_RANKS_FLUSH_EVERY": "20"}
    work = tmp_path / "resumed"

    # Segment 1: rank 0 is SIGKILLed (no handler runs; mpiexec ends the job).
    proc = launch(work, "--resume", "auto", *every, **env)
    wait_for_step(proc, work, 45, between_checkpoints=10)
    os.kill(int((work / "pid.0").read_text()), signal.SIGKILL)
    finish(proc, work, timeout=60)
    # Usually segment 2 logs some steps again (the superseding rule); the
    # result must be the same either way.
    start2 = int((work / "ckpt.txt").read_text()) + 1

    # Segment 2: SIGTERM.
    proc = launch(work, "--resume", "auto", *every, **env)
    wait_for_step(proc, work, 95, between_checkpoints=10)
    proc.send_signal(signal.SIGTERM)
    finish(proc, work, timeout=GRACE + 25)

    # Segment 3: to the end, finalize on every rank.
    proc = launch(work, "--resume", "auto", "--steps", str(steps), "--finalize", *every, **env)
    assert finish(proc, work, timeout=240) == 0, (work / "job.log").read_text()

    ref = tmp_path / "reference"
    proc = launch(ref, "--steps", str(steps), "--finalize", *every)
    assert finish(proc, ref, timeout=240) == 0, (ref / "job.log").read_text()

    report = work / "report"
    assert len(list(report.glob("*.jsonl"))) == 1  # one run, one JSONL
    (run_dir,) = [p for p in report.iterdir() if p.is_dir()]
    (ref_dir,) = [p for p in (ref / "report").iterdir() if p.is_dir()]
    for name in ("train.h5", "eval.h5"):
        with xr.open_dataset(run_dir / name) as got, xr.open_dataset(ref_dir / name) as want:
            assert got.sizes == want.sizes, name
            np.testing.assert_array_equal(got["step"].values, want["step"].values)
            assert set(got.data_vars) == set(want.data_vars)
            for var in want.data_vars:
                if var.rsplit("_", 1)[-1] in ("mean", "max", "min", "std"):
                    # The reduction's shift restarts with the process: the first
                    # statistics of a segment may differ in the last bit.
                    np.testing.assert_allclose(
                        got[var].values, want[var].values, rtol=1e-12, atol=0, err_msg=var
                    )
                else:
                    np.testing.assert_array_equal(got[var].values, want[var].values, err_msg=var)
    assert csv_steps(run_dir / "metrics.csv") == csv_steps(ref_dir / "metrics.csv")
    _path, lines = jsonl_lines(report)
    events = [r["_event"] for r in lines if "_event" in r]
    assert events.count("start") == 3 and events[-1] == "finalized"
    assert "interrupted" in events
    # ranks.h5: both ranks' own values for every step logged after the SIGKILL.
    for group, key, fn in (("train", "loss", lambda s, r: values(s, r)["train/loss"]),):
        by_rank = _ranks_by_step(run_dir / "ranks.h5", group, key)
        for rank in (0, 1):
            for step in range(start2, steps):
                assert by_rank[rank].get(step) == pytest.approx(fn(step, rank)), (rank, step)
    assert not list(report.glob("*.partial.npz"))  # merged and removed
    text = (run_dir / "report.md").read_text()
    assert "# ezpz run report: lifecycle-test" in text
    segments = text.split("## Segments", 1)[1].split("##", 1)[0]
    rows = [
        line for line in segments.splitlines() if line.startswith("| ") and "job id" not in line
    ]
    assert len(rows) == 3
    assert "killed or crashed" in rows[0]
    assert "interrupted (SIGTERM)" in rows[1]
    assert "finalized" in rows[2]


def test_example_train_resumes_from_its_checkpoint(tmp_path):
    """``python -m ezpz.examples.train --resume``: SIGTERM, then the restarted job finishes."""
    pytest.importorskip("torch", reason="the example trains a torch model")
    xr = pytest.importorskip("xarray")
    outdir = tmp_path / "run"
    # fmt: off
    argv = [
        sys.executable, "-m", "ezpz.examples.train", "--steps", "40", "--ckpt-every", "5",
        "--eval-every", "10", "--batch-size", "8", "--hidden", "8", "--depth", "1",
        "--eval-size", "16", "--backends", "csv", "--outdir", str(outdir), "--resume",
        "--warmup", "0",
    ]
    # fmt: on
    env = {**os.environ, "EZPZ_SHUTDOWN_GRACE": str(GRACE)}
    env.pop("EZPZ_TRACKER_BACKENDS", None)
    log = open(tmp_path / "job.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 240
    while not (outdir / "checkpoint.pt").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "job.log").read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=GRACE + 60) == -signal.SIGTERM
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stderr
    with xr.open_dataset(outdir / "train.h5") as ds:
        assert ds["step"].values.tolist() == list(range(40))  # each step once
    runs = [p for p in outdir.glob("*.jsonl") if not p.is_symlink() and p.name != "metrics.jsonl"]
    assert len(runs) == 1
    assert "interrupted (SIGTERM)" in (outdir / "report.md").read_text()
