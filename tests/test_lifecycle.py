"""Run lifecycle in one process: signal handlers, resume rules, bad input (issue 10).

Signals that end the process run in a subprocess; everything else in-process.
The multi-rank behaviour is in tests/test_lifecycle_restart.py (real mpiexec).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from ezpz.history import History
from ezpz.history.resume import ResumeError, load_run, resume_wanted, segments
from ezpz.history.signals import SignalGuard


def make(tmp_path: Path, **kw) -> History:
    kw.setdefault("backends", "none")
    return History(report_dir=tmp_path / "report", distributed_history=False, **kw)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# -- signal handlers -----------------------------------------------------------------
def test_guard_chains_to_the_handler_installed_before_and_restores_it():
    calls: list[str] = []

    def user(signum, frame):
        calls.append("user")

    before = signal.signal(signal.SIGUSR1, user)
    try:
        guard = SignalGuard(lambda s: calls.append("ezpz"), signals=(signal.SIGUSR1,))
        assert guard.install()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert calls == ["ezpz", "user"]
        os.kill(os.getpid(), signal.SIGUSR1)  # the callback runs once; the user's every time
        assert calls == ["ezpz", "user", "user"]
        guard.restore()
        assert signal.getsignal(signal.SIGUSR1) is user
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_guard_leaves_a_handler_installed_after_it_alone():
    guard = SignalGuard(lambda s: None, signals=(signal.SIGUSR2,))
    before = signal.getsignal(signal.SIGUSR2)
    guard.install()

    def later(signum, frame):
        pass

    signal.signal(signal.SIGUSR2, later)
    guard.restore()
    assert signal.getsignal(signal.SIGUSR2) is later
    signal.signal(signal.SIGUSR2, before)


def test_history_installs_and_restores_handlers(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    hist = make(tmp_path)
    assert signal.getsignal(signal.SIGTERM) is not before
    hist.close()
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("how", ["argument", "env"])
def test_handle_signals_opt_out(tmp_path, monkeypatch, how):
    before = signal.getsignal(signal.SIGTERM)
    if how == "env":
        monkeypatch.setenv("EZPZ_HANDLE_SIGNALS", "0")
        hist = make(tmp_path)
    else:
        hist = make(tmp_path, handle_signals=False)
    assert signal.getsignal(signal.SIGTERM) == before
    hist.close()


def test_history_outside_the_main_thread_installs_nothing(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    out: list[History] = []
    t = threading.Thread(target=lambda: out.append(make(tmp_path)))
    t.start()
    t.join()
    assert signal.getsignal(signal.SIGTERM) == before
    out[0].update({"loss": 1.0})
    out[0].close()


JOB = textwrap.dedent(
    """
    import os, signal, sys, time
    from ezpz.history import History
    hist = History(report_dir=sys.argv[1], backends="csv", distributed_history=False)
    for step in range(5):
        hist.update({"loss": 1.0 / (step + 1)}, step=step)
    try:
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
        time.sleep(5)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(3)
    print("still alive", flush=True)
    """
)


def _run_job(tmp_path: Path, sig: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    report = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if k != "EZPZ_TRACKER_BACKENDS"}
    proc = subprocess.run(
        [sys.executable, str(script), str(report), sig],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return proc, report


def test_sigterm_saves_the_run_and_ends_with_status_143(tmp_path):
    proc, report = _run_job(tmp_path, "SIGTERM")
    assert proc.returncode == -signal.SIGTERM, proc.stderr  # the shell's 143
    assert "still alive" not in proc.stdout
    (jsonl,) = report.glob("*.jsonl")
    got = lines(jsonl)
    assert [r["_step"] for r in got if "_step" in r] == list(range(5))
    assert got[-1]["_event"] == "interrupted" and got[-1]["signal"] == "SIGTERM"
    (metrics,) = report.glob("*/metrics.csv")
    with open(metrics, newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(5))


def test_sigint_saves_the_run_then_raises_keyboard_interrupt(tmp_path):
    proc, report = _run_job(tmp_path, "SIGINT")
    assert proc.returncode == 3, proc.stderr
    assert "KeyboardInterrupt" in proc.stdout
    (jsonl,) = report.glob("*.jsonl")
    assert lines(jsonl)[-1]["signal"] == "SIGINT"


# -- resume ---------------------------------------------------------------------------
def test_resume_values():
    assert resume_wanted(None) is None
    assert resume_wanted(False) is None
    assert resume_wanted(True) == "auto"
    assert resume_wanted("AUTO") == "auto"
    assert resume_wanted("0") is None
    assert resume_wanted("2026-11-30-101010-abcdef") == "2026-11-30-101010-abcdef"


def test_resume_env(tmp_path, monkeypatch):
    first = make(tmp_path)
    first.update({"loss": 1.0}, step=0)
    first.close()
    monkeypatch.setenv("EZPZ_RESUME", "auto")
    second = make(tmp_path)
    assert second.run_id == first.run_id
    second.close()


def test_auto_starts_a_new_run_when_there_is_none_or_all_are_finalized(tmp_path):
    a = make(tmp_path, resume="auto")
    a.update({"loss": 1.0}, step=0)
    a._life.finalized()  # what finalize() writes last (without plots and datasets)
    a.close()
    b = make(tmp_path, resume="auto")
    assert b.run_id != a.run_id
    b.close()


def test_auto_resumes_the_newest_unfinalized_run(tmp_path):
    older = make(tmp_path)
    older.update({"loss": 1.0}, step=0)
    older.close()
    newer = make(tmp_path)
    newer.update({"loss": 2.0}, step=0)
    newer.close()
    os.utime(older.jsonl_path, (1, 1))  # older by mtime
    again = make(tmp_path, resume="auto")
    assert again.run_id == newer.run_id
    assert again.jsonl_path == newer.jsonl_path
    again.close()


def test_resume_by_run_id_and_by_path(tmp_path):
    first = make(tmp_path)
    first.update({"loss": 1.0}, step=0)
    first.close()
    by_id = make(tmp_path, resume=first.run_id)
    assert by_id.run_id == first.run_id
    by_id.close()
    by_path = make(tmp_path, resume=str(first.jsonl_path))
    assert by_path.run_id == first.run_id
    by_path.close()


def test_unknown_run_id_or_path_is_an_error_naming_the_runs(tmp_path):
    first = make(tmp_path)
    first.update({"loss": 1.0}, step=0)
    first.close()
    with pytest.raises(ResumeError) as err:
        make(tmp_path, resume="2020-01-01-000000-000000")
    assert str(tmp_path / "report") in str(err.value)
    assert first.run_id in str(err.value)
    with pytest.raises(ResumeError, match="no such JSONL"):
        make(tmp_path, resume=str(tmp_path / "nope.jsonl"))


def test_resumed_history_covers_every_segment_and_supersedes_repeated_steps(tmp_path, caplog):
    first = make(tmp_path, backends="csv")
    for step in range(10):
        first.update({"train/loss": float(step), "train/x": [1.0, 2.0]}, step=step)
        if step % 4 == 0:
            first.update({"eval/acc": step / 10}, step=step)
    first.close()
    first.tracker.finish()
    with caplog.at_level(logging.WARNING):
        second = make(tmp_path, resume="auto", backends="csv")
    assert second.run_id == first.run_id
    np.testing.assert_array_equal(second.history["train/loss"], np.arange(10.0))
    assert second.history["train/x"].shape == (10, 2)
    np.testing.assert_array_equal(second.history["eval/acc"], [0.0, 0.4, 0.8])
    # A restart from a checkpoint at step 6: steps 6.. are recorded again.
    for step in range(6, 12):
        second.update({"train/loss": 100.0 + step}, step=step)
    assert "supersede" in caplog.text
    steps = second.store.group("train").steps
    np.testing.assert_array_equal(steps, np.arange(12))
    np.testing.assert_array_equal(
        second.history["train/loss"], [*range(6), *(100.0 + s for s in range(6, 12))]
    )
    np.testing.assert_array_equal(second.history["eval/acc"], [0.0, 0.4])  # step 8 superseded
    second.close()
    second.tracker.finish()
    # The JSONL read back (offline) follows the same rule; the csv has each step once.
    run = load_run(second.jsonl_path)
    assert run.groups["train"].rows == 12
    offline = History.from_jsonl(second.jsonl_path)
    for key in ("train/loss", "eval/acc", "train/x"):
        np.testing.assert_array_equal(offline.history[key], second.history[key])
    (metrics,) = (tmp_path / "report").glob("*/metrics.csv")
    with open(metrics, newline="") as fh:
        rows = [int(r["step"]) for r in csv.DictReader(fh)]
    assert [s for s in rows if s not in (0, 4)] == [s for s in range(12) if s not in (0, 4)]
    assert rows.count(0) == 2 and rows.count(4) == 2 and rows.count(8) == 1  # eval/8 superseded


def test_step_none_continues_after_the_recorded_steps(tmp_path):
    first = make(tmp_path)
    for _ in range(3):
        first.update({"loss": 1.0})
    first.close()
    second = make(tmp_path, resume="auto")
    second.update({"loss": 2.0})
    np.testing.assert_array_equal(second.store.group("").steps, [0, 1, 2, 3])
    second.close()


def test_csv_rows_lost_by_a_kill_are_restored_from_the_jsonl(tmp_path):
    first = make(tmp_path, backends="csv")
    for step in range(8):
        first.update({"loss": float(step)}, step=step)
    first.close()
    first.tracker.finish()
    (metrics,) = (tmp_path / "report").glob("*/metrics.csv")
    text = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(text[:-3]))  # the last three rows never reached the file
    second = make(tmp_path, resume="auto", backends="csv")
    second.update({"loss": 8.0}, step=8)
    second.close()
    second.tracker.finish()
    with open(metrics, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(9))
    assert [float(r["loss"]) for r in rows] == [float(s) for s in range(9)]
    assert sum(1 for line in metrics.read_text().splitlines() if line.startswith("step")) == 1


def test_torn_last_line_is_cut_with_a_warning(tmp_path, caplog):
    first = make(tmp_path)
    for step in range(3):
        first.update({"loss": float(step)}, step=step)
    first.close()
    with open(first.jsonl_path, "ab") as fh:
        fh.write(b'{"_step":3,"_time":1.0,"lo')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        second = make(tmp_path, resume="auto")
    assert "torn" in caplog.text
    second.update({"loss": 3.0}, step=3)
    second.close()
    got = lines(second.jsonl_path)  # every line parses again
    assert [r["_step"] for r in got if "_step" in r] == [0, 1, 2, 3]


def test_differing_config_is_a_warning_listing_the_keys(tmp_path, caplog):
    first = make(tmp_path, config={"lr": 0.1, "model": {"depth": 2}, "seed": 1})
    first.update({"loss": 1.0}, step=0)
    first.close()
    with caplog.at_level(logging.WARNING):
        second = make(tmp_path, resume="auto", config={"lr": 0.2, "model": {"depth": 3}, "seed": 1})
    assert "lr" in caplog.text and "model.depth" in caplog.text
    assert "seed" not in caplog.text.split("differing keys:")[1]
    second.close()
    starts = [r for r in lines(second.jsonl_path) if r.get("_event") == "start"]
    assert [s["config"]["lr"] for s in starts] == [0.1, 0.2]  # both recorded


def test_auto_after_finalize_into_the_report_dir_starts_a_new_run(tmp_path):
    out = tmp_path / "out"
    first = History(outdir=out, backends="none", distributed_history=False)
    first.update({"loss": 1.0}, step=0)
    first.finalize(plot=False)
    first.close()
    assert (out / "metrics.jsonl").exists()  # a copy: not a run of its own
    second = History(outdir=out, backends="none", distributed_history=False, resume="auto")
    assert second.run_id != first.run_id
    second.close()


def test_run_name_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EZPZ_RUN_NAME", "my-run")
    hist = make(tmp_path)
    assert hist.run_name == "my-run"
    hist.close()
    assert lines(hist.jsonl_path)[0]["run_name"] == "my-run"


def test_segments_from_events(tmp_path):
    path = tmp_path / "run.jsonl"
    rows = [
        {"_event": "start", "_time": 1.0, "job_id": "11"},
        {"_step": 0, "_time": 2.0},
        {"_step": 1, "_time": 3.0},
        {"_event": "start", "_time": 10.0, "job_id": "12", "resumed": True},
        {"_step": 1, "_time": 11.0},
        {"_event": "interrupted", "_time": 12.0, "signal": "SIGTERM"},
        {"_event": "start", "_time": 20.0, "job_id": "13", "resumed": True},
        {"_step": 2, "_time": 21.0},
        {"_event": "finalized", "_time": 22.0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    segs = segments(path)
    assert [s.job_id for s in segs] == ["11", "12", "13"]
    assert [s.ended for s in segs] == ["killed or crashed", "interrupted (SIGTERM)", "finalized"]
    assert segs[0].end == 3.0 and segs[1].end == 12.0
    assert (segs[1].first_step, segs[1].last_step) == (1, 1)
    run = load_run(path)
    assert run.groups == {} or all(g.rows >= 0 for g in run.groups.values())
    assert run.steps.tolist() == [0, 1, 2]  # step 1 of job 11 superseded by job 12's


def test_a_caught_keyboard_interrupt_leaves_the_run_going(tmp_path):
    hist = make(tmp_path, backends="csv")
    hist.update({"loss": 1.0}, step=0)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs before the next line
    assert not hist.tracker.finished  # drained, not finished: the program may go on
    hist.update({"loss": 2.0}, step=1)
    hist.close()
    hist.tracker.finish()
    (metrics,) = (tmp_path / "report").glob("*/metrics.csv")
    with open(metrics, newline="") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [0, 1]
    events = [r["_event"] for r in lines(hist.jsonl_path) if "_event" in r]
    assert events == ["start", "interrupted"]
