"""StopWatch (docs/console-summary.md, "StopWatch"): logs elapsed time, and with wbtag sends it to the active tracker."""

from __future__ import annotations

import csv
import gc
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from ezpz.history.stopwatch import StopWatch, get_active_tracker, set_active_tracker

LOGGER = "ezpz.history.stopwatch"


class RecordingTracker:
    """Anything with ``log(metrics, step=, commit=)`` can be the active tracker."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], int | None, bool]] = []

    def log(self, metrics: dict[str, Any], step: int | None = None, commit: bool = True) -> None:
        self.calls.append((dict(metrics), step, commit))


class SlottedTracker:
    """Refuses weak references: StopWatch must still reach it."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def log(self, metrics: dict[str, Any], step: int | None = None, commit: bool = True) -> None:
        self.calls.append(dict(metrics))


class FailingTracker:
    def log(self, metrics: dict[str, Any], step: int | None = None, commit: bool = True) -> None:
        raise ConnectionError("tracker is down")


@pytest.fixture(autouse=True)
def no_active_tracker():
    set_active_tracker(None)
    yield
    set_active_tracker(None)


def test_logs_elapsed_time_at_info(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger=LOGGER)
    with StopWatch("forward pass") as watch:
        time.sleep(0.02)
    assert watch.elapsed is not None and watch.elapsed >= 0.015
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    message = records[0].getMessage()
    assert message.startswith("forward pass took ") and message.endswith(" s")
    assert float(message.split()[-2]) == pytest.approx(watch.elapsed, abs=1e-6)


def test_wbtag_goes_to_the_active_tracker():
    tracker = RecordingTracker()
    set_active_tracker(tracker)
    with StopWatch("forward pass", wbtag="timing/forward") as watch:
        pass
    with StopWatch("backward", wbtag="timing/backward", iter=7, commit=True) as watch2:
        pass
    assert tracker.calls == [
        ({"timing/forward": watch.elapsed}, None, False),
        ({"timing/backward": watch2.elapsed}, 7, True),
    ]


def test_without_wbtag_or_tracker_only_logs(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger=LOGGER)
    tracker = RecordingTracker()
    set_active_tracker(tracker)
    with StopWatch("no tag"):
        pass
    assert tracker.calls == []
    set_active_tracker(None)
    with StopWatch("no tracker", wbtag="timing/x"):
        pass
    assert [r.getMessage().split(" took ")[0] for r in caplog.records] == ["no tag", "no tracker"]


def test_log_output_false_still_tracks(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    tracker = RecordingTracker()
    set_active_tracker(tracker)
    with StopWatch("quiet", wbtag="timing/quiet", log_output=False):
        pass
    assert not [r for r in caplog.records if "quiet" in r.getMessage()]
    assert [c[0].keys() for c in tracker.calls] == [{"timing/quiet": 0}.keys()]


def test_failing_tracker_never_breaks_the_timed_code(caplog: pytest.LogCaptureFixture):
    tracker = FailingTracker()  # held here: the active tracker is a weak reference
    set_active_tracker(tracker)
    with StopWatch("step", wbtag="timing/step"):
        value = 42
    assert value == 42
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "tracker is down" in warnings[0].getMessage()


def test_exception_propagates_is_logged_not_tracked(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger=LOGGER)
    tracker = RecordingTracker()
    set_active_tracker(tracker)
    with pytest.raises(ZeroDivisionError), StopWatch("broken", wbtag="timing/broken"):
        1 / 0  # noqa: B018
    assert tracker.calls == []
    assert "raised ZeroDivisionError" in caplog.records[-1].getMessage()


def test_active_tracker_is_a_weak_reference():
    tracker = RecordingTracker()
    set_active_tracker(tracker)
    assert get_active_tracker() is tracker
    del tracker
    gc.collect()
    assert get_active_tracker() is None
    with StopWatch("after the tracker is gone", wbtag="timing/x"):
        pass


def test_tracker_without_weakref_support():
    tracker = SlottedTracker()
    set_active_tracker(tracker)
    with StopWatch("slotted", wbtag="timing/slotted"):
        pass
    assert len(tracker.calls) == 1 and "timing/slotted" in tracker.calls[0]


def test_decorator_times_every_call_and_recursion():
    tracker = RecordingTracker()
    set_active_tracker(tracker)
    watch = StopWatch("fib", wbtag="timing/fib")

    @watch
    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib.__name__ == "fib"
    assert fib(5) == 5
    assert len(tracker.calls) == 15  # fib(5) makes 15 calls, each timed
    outer = tracker.calls[-1][0]["timing/fib"]  # the outermost call finishes last
    assert outer == max(c[0]["timing/fib"] for c in tracker.calls)
    assert watch.elapsed == outer


def test_decorated_exceptions_propagate():
    @StopWatch("fails")
    def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fails()


def test_history_makes_its_tracker_active(tmp_path: Path):
    from ezpz.history import History

    first = History(backends="none", report_dir=tmp_path / "a", distributed_history=False)
    assert get_active_tracker() is first.tracker
    second = History(backends="none", report_dir=tmp_path / "b", distributed_history=False)
    assert get_active_tracker() is second.tracker


def test_timings_reach_the_csv_backend_as_their_own_rows_of_the_step(tmp_path: Path):
    """Real History + csv backend: a commit=False timing is a row of its step (one row per
    log() call, never merged into the next row)."""
    from ezpz.history import History

    history = History(
        backends="csv", outdir=tmp_path, report_dir=tmp_path, distributed_history=False
    )
    elapsed = []
    for step in range(3):
        with StopWatch("forward", wbtag="timing/forward", iter=step) as watch:
            loss = 1.0 / (step + 1)
        elapsed.append(watch.elapsed)
        history.update({"loss": loss}, step=step)
    history.tracker.finish()
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 0, 1, 1, 2, 2]
    for step in range(3):
        timing, update = rows[2 * step], rows[2 * step + 1]
        assert float(timing["timing/forward"]) == pytest.approx(elapsed[step])
        assert float(update["loss"]) == pytest.approx(1.0 / (step + 1))
