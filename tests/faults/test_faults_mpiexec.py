"""Fault suite under a real ``mpiexec -n 2`` (launched from a serial test).

SIGKILL of rank 0 mid-run, and a rank that never calls ``update()`` while
``EZPZ_COLLECTIVE_TIMEOUT`` is set. The job runs as a subprocess: a
regression (a hang) fails through the subprocess timeout, and a killed rank
cannot take the test run with it.
"""

from __future__ import annotations

import pytest
from _faults import MPIEXEC, csv_frame, jsonl_lines, metric_steps, run_script

pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="needs mpiexec in the venv")

KILL_RANK0 = """
    import os, signal, sys
    from ezpz.history import History
    shared = sys.argv[1]
    hist = History(outdir=shared + "/out", jsonl_path=shared + "/run.jsonl", backends="csv")
    for step in range(100):
        hist.update({"train/loss": 1.0 / (step + 1), "train/rank": float(hist.rank)}, step=step)
        if step == 60 and hist.rank == 0:
            hist.tracker.flush(60)  # the csv rows so far are on disk
            print("KILL", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    print("rank", hist.rank, "not killed", flush=True)
"""


def test_sigkill_of_rank0_keeps_every_finished_line(tmp_path):
    proc = run_script(
        tmp_path,
        KILL_RANK0,
        str(tmp_path),
        mpiexec_ranks=2,
        env={"EZPZ_COLLECTIVE_TIMEOUT": "5"},
        timeout=240,
    )
    text = proc.stdout + proc.stderr
    assert "KILL" in proc.stdout, text
    assert proc.returncode != 0, text  # the job ends (no hang) and says it failed
    records, torn = jsonl_lines(tmp_path / "run.jsonl")
    assert torn == []
    assert metric_steps(records) == list(range(61))  # every finished update, 0..60
    rows = [r for r in records if "_event" not in r]
    assert all(r["train/loss"] == pytest.approx(1.0 / (r["_step"] + 1)) for r in rows)
    assert all(r["train/rank/mean"] == 0.5 for r in rows)  # statistics over both ranks
    df = csv_frame(tmp_path / "out" / "metrics.csv")
    assert df["step"].tolist() == list(range(61))  # whole rows, none lost before the flush


SILENT_RANK = """
    import os, sys, time
    from ezpz.history import History
    from ezpz.history.collective_timeout import CollectiveTimeoutError
    shared = sys.argv[1]
    hist = History(outdir=shared + "/out", jsonl_path=shared + "/run.jsonl", backends="none")
    for step in range(5):
        if hist.rank == 1 and step == 3:
            time.sleep(8)  # alive, never calls update() again (a stuck data loader)
            os._exit(0)
        try:
            hist.update({"loss": float(step)}, step=step)
        except CollectiveTimeoutError as exc:
            print("TIMEOUT:", exc, flush=True)
            hist.close()
            os._exit(3)
    print("rank", hist.rank, "done", flush=True)
"""


def test_a_rank_that_never_calls_update_is_a_timeout_not_a_hang(tmp_path):
    proc = run_script(
        tmp_path,
        SILENT_RANK,
        str(tmp_path),
        mpiexec_ranks=2,
        env={"EZPZ_COLLECTIVE_TIMEOUT": "1"},
        timeout=180,
    )
    text = proc.stdout + proc.stderr
    assert "TIMEOUT:" in proc.stdout, text
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("TIMEOUT:"))
    assert "EZPZ_COLLECTIVE_TIMEOUT" in line and "3" in line, line  # names what and which step
    records, torn = jsonl_lines(tmp_path / "run.jsonl")
    assert torn == [] and metric_steps(records) == [0, 1, 2]  # what was agreed is kept
