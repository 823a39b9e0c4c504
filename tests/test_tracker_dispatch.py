"""Tracker dispatch: isolation, non-blocking delivery, queue-full policy, deadlines."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from ezpz.tracker import NullTracker, Tracker, TrackerBackend


class Recorder(TrackerBackend):
    """Keeps every call it gets, in order."""

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.calls: list[tuple] = []
        self.finished = False

    def log(self, metrics, step=None, commit=True):
        self.calls.append(("log", dict(metrics), step, commit))

    def log_config(self, config):
        self.calls.append(("log_config", dict(config)))

    def log_table(self, key, columns, rows):
        self.calls.append(("log_table", key, list(columns), [list(r) for r in rows]))

    def log_image(self, key, path, caption=None):
        self.calls.append(("log_image", key, path, caption))

    def log_artifact(self, path, name=None):
        self.calls.append(("log_artifact", path, name))

    def set_outdir(self, outdir):
        self.calls.append(("set_outdir", outdir))

    def finish(self):
        self.finished = True

    def logged_steps(self) -> list:
        return [c[2] for c in self.calls if c[0] == "log"]


class Raising(TrackerBackend):
    """Raises in every required method."""

    name = "raising"

    def log(self, metrics, step=None, commit=True):
        raise ValueError(f"log failed at step {step}")

    def log_config(self, config):
        raise KeyError("config")

    def finish(self):
        raise RuntimeError("finish failed")


class Sleeping(Recorder):
    """Takes ``delay`` seconds per metric call (a slow network backend)."""

    def __init__(self, delay: float = 0.1) -> None:
        super().__init__("sleeping")
        self.delay = delay

    def log(self, metrics, step=None, commit=True):
        time.sleep(self.delay)
        super().log(metrics, step, commit)


class Hanging(Recorder):
    """Never returns from ``log`` until released (a dead server without timeouts)."""

    def __init__(self) -> None:
        super().__init__("hanging")
        self.entered = threading.Event()
        self.release = threading.Event()

    def log(self, metrics, step=None, commit=True):
        self.entered.set()
        self.release.wait()
        super().log(metrics, step, commit)


def test_every_backend_gets_every_call_in_order():
    a, b = Recorder("a"), Recorder("b")
    tracker = Tracker([a, b])
    tracker.log_config({"lr": 0.1})
    for step in range(50):
        tracker.log({"loss": float(step)}, step=step)
    tracker.log_table("training_history", ["step", "loss"], [[0, 1.0]])
    tracker.log_image("plot", "p.png", caption="c")
    tracker.log_artifact("run.jsonl")
    tracker.set_outdir("/tmp/out")
    report = tracker.finish(timeout=30)
    assert report.ok, str(report)
    for backend in (a, b):
        kinds = [c[0] for c in backend.calls]
        assert kinds == ["log_config"] + ["log"] * 50 + [
            "log_table",
            "log_image",
            "log_artifact",
            "set_outdir",
        ]
        assert backend.logged_steps() == list(range(50))
        assert [c[1]["loss"] for c in backend.calls if c[0] == "log"] == [
            float(s) for s in range(50)
        ]
        assert backend.finished
    assert report.backends["a"].logs_delivered == 50


def test_log_snapshots_the_callers_dict_and_isolates_backends():
    class Mutating(Recorder):
        def log(self, metrics, step=None, commit=True):
            metrics["loss"] = -1.0  # a badly behaved backend
            super().log(metrics, step, commit)

    mutating, clean = Mutating("mutating"), Recorder("clean")
    tracker = Tracker([mutating, clean])
    metrics = {"loss": 1.0}
    tracker.log(metrics, step=0)
    metrics["loss"] = 2.0  # the caller reuses its dict
    tracker.finish(timeout=30)
    assert clean.calls[0][1] == {"loss": 1.0}
    assert metrics == {"loss": 2.0}


def test_raising_backend_is_isolated_and_logged_once_per_kind(caplog):
    good = Recorder("good")
    tracker = Tracker([Raising(), good])
    with caplog.at_level(logging.WARNING, logger="ezpz.tracker"):
        tracker.log_config({"a": 1})
        for step in range(20):
            tracker.log({"loss": 1.0}, step=step)
        report = tracker.finish(timeout=30)
    assert good.logged_steps() == list(range(20))
    assert good.calls[0] == ("log_config", {"a": 1})
    failures = report.backends["raising"].failures
    assert failures == {"log_config: KeyError": 1, "log: ValueError": 20, "finish: RuntimeError": 1}
    messages = [r.getMessage() for r in caplog.records if "'raising' failed" in r.getMessage()]
    # one warning per kind of failure, not one per step
    assert len(messages) == 3, messages
    assert sum("log()" in m for m in messages) == 1
    assert not report.ok
    assert report.backends["good"].ok


def test_slow_backend_does_not_block_log_and_drains_on_finish():
    slow, fast = Sleeping(delay=0.02), Recorder("fast")
    tracker = Tracker([slow, fast])
    for step in range(10):
        tracker.log({"loss": float(step)}, step=step)
    # log() only enqueued: the slow backend cannot have processed all ten yet
    assert len(slow.calls) < 10
    assert tracker.flush(timeout=30)
    assert fast.logged_steps() == list(range(10))
    report = tracker.finish(timeout=30)
    assert slow.logged_steps() == list(range(10))
    assert report.ok


def test_hanging_backend_finish_returns_by_its_deadline_and_reports():
    hanging, good = Hanging(), Recorder("good")
    tracker = Tracker([hanging, good])
    for step in range(5):
        tracker.log({"loss": 1.0}, step=step)
    assert hanging.entered.wait(10)
    start = time.monotonic()
    report = tracker.finish(timeout=1.0)
    elapsed = time.monotonic() - start
    hanging.release.set()
    assert elapsed < 10  # the deadline is 1 s; generous bound, this is behaviour, not timing
    assert report.timed_out == ["hanging"]
    lane = report.backends["hanging"]
    assert lane.undelivered == 5 + 1  # four queued logs + one in flight + finish()
    assert report.undelivered == {"hanging": 6}
    assert good.logged_steps() == list(range(5)) and good.finished
    assert report.backends["good"].ok
    assert tracker.finish() is report  # idempotent


def test_queue_full_drops_oldest_metrics_but_never_control_calls(caplog):
    hanging = Hanging()
    tracker = Tracker([hanging], queue_size=4)
    tracker.log({"loss": 0.0}, step=0)
    assert hanging.entered.wait(10)  # step 0 is in flight, the queue is empty
    tracker.log_config({"lr": 1})
    with caplog.at_level(logging.WARNING, logger="ezpz.tracker"):
        for step in range(1, 11):
            tracker.log({"loss": float(step)}, step=step)
    tracker.log_image("img", "a.png")
    hanging.release.set()
    report = tracker.finish(timeout=30)
    # steps 1..6 were dropped (oldest first); 7..10 survive, control calls too
    assert hanging.logged_steps() == [0, 7, 8, 9, 10]
    kinds = [c[0] for c in hanging.calls]
    assert kinds == ["log", "log_config", "log", "log", "log", "log", "log_image"]
    lane = report.backends["hanging"]
    assert (lane.logs_enqueued, lane.logs_delivered, lane.logs_dropped) == (11, 5, 6)
    assert report.undelivered == {"hanging": 6}
    assert sum("dropping its oldest" in r.getMessage() for r in caplog.records) == 1


def test_log_after_finish_is_ignored_and_finish_is_idempotent():
    rec = Recorder()
    tracker = Tracker([rec])
    tracker.log({"a": 1.0}, step=0)
    first = tracker.finish(timeout=30)
    tracker.log({"a": 2.0}, step=1)
    tracker.log_config({"x": 1})
    assert tracker.finish(timeout=30) is first
    assert rec.logged_steps() == [0]
    with pytest.raises(RuntimeError):
        tracker.add_backend(Recorder("late"))


def test_get_backend_wandb_run_and_names():
    class FakeWandb(Recorder):
        def __init__(self):
            super().__init__("wandb")
            self.run = object()

    wb = FakeWandb()
    tracker = Tracker([Recorder("csvish"), wb])
    assert tracker.get_backend("WANDB") is wb
    assert tracker.get_backend("nope") is None
    assert tracker.wandb_run is wb.run
    assert tracker.backend_names == ("csvish", "wandb")
    assert tracker.backends[1] is wb
    with pytest.raises(ValueError, match="already attached"):
        tracker.add_backend(Recorder("wandb"))
    with pytest.raises(TypeError):
        tracker.add_backend(object())  # type: ignore[arg-type]
    tracker.finish(timeout=30)
    assert Tracker().wandb_run is None


def test_null_tracker_is_a_no_op():
    null = NullTracker()
    null.log({"a": 1.0}, step=0)
    null.log_config({"a": 1})
    null.log_table("t", ["a"], [[1]])
    null.log_image("i", "x.png")
    assert null.flush(1)
    report = null.finish()
    assert report.ok and report.backends == {}
    assert len(null) == 0 and null.get_backend("csv") is None and null.wandb_run is None
    with pytest.raises(TypeError):
        null.add_backend(Recorder())


def test_commit_flag_and_step_reach_the_backend():
    rec = Recorder()
    tracker = Tracker([rec])
    tracker.log({"a": 1.0}, step=3, commit=False)
    tracker.log({"b": 2.0}, step=3)
    tracker.log({"c": 3.0})
    tracker.finish(timeout=30)
    assert [(c[2], c[3]) for c in rec.calls] == [(3, False), (3, True), (None, True)]


def test_env_sizes_and_bad_env_values(monkeypatch, caplog):
    monkeypatch.setenv("EZPZ_TRACKER_QUEUE_SIZE", "7")
    monkeypatch.setenv("EZPZ_TRACKER_FINISH_TIMEOUT", "2.5")
    t = Tracker()
    assert (t.queue_size, t.finish_timeout) == (7, 2.5)
    monkeypatch.setenv("EZPZ_TRACKER_QUEUE_SIZE", "lots")
    with caplog.at_level(logging.WARNING):
        assert Tracker().queue_size == 1024
    assert any("EZPZ_TRACKER_QUEUE_SIZE" in r.getMessage() for r in caplog.records)


def test_slow_backend_cut_off_at_the_deadline_reports_what_it_missed():
    slow = Sleeping(delay=0.05)
    tracker = Tracker([slow])
    for step in range(40):
        tracker.log({"loss": 1.0}, step=step)
    report = tracker.finish(timeout=0.3)
    lane = report.backends["sleeping"]
    assert report.timed_out == ["sleeping"] and not report.ok
    assert lane.logs_delivered < 40 and lane.logs_dropped == 0
    # everything not delivered is accounted for (queued or in flight, plus finish())
    assert lane.undelivered >= 40 - lane.logs_delivered
    time.sleep(0.2)
    assert len(slow.calls) <= lane.logs_delivered + 1  # abandoned: at most the in-flight call ends
    assert not slow.finished


def test_an_idle_worker_picks_up_metrics_without_being_woken():
    rec = Recorder()
    tracker = Tracker([rec])
    time.sleep(0.2)  # the worker is idle, polling
    tracker.log({"a": 1.0}, step=7)  # log() rings no bell
    deadline = time.monotonic() + 10
    while not rec.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.logged_steps() == [7]
    tracker.finish(timeout=30)


def test_a_burst_that_half_fills_the_queue_wakes_the_worker(monkeypatch):
    from ezpz.tracker import dispatch

    monkeypatch.setattr(dispatch, "POLL_INTERVAL", 60.0)  # no poll during this test
    rec = Recorder()
    tracker = Tracker([rec], queue_size=8)
    lane = tracker._lanes[0]
    deadline = time.monotonic() + 10
    while not lane._idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lane._idle
    for step in range(3):
        tracker.log({"a": 1.0}, step=step)
    assert lane._idle  # below half the queue: still sleeping until its next poll
    tracker.log({"a": 1.0}, step=3)
    assert not lane._idle  # the fourth of eight rang the bell
    assert tracker.flush(timeout=30)
    assert rec.logged_steps() == [0, 1, 2, 3]
    tracker.finish(timeout=30)
