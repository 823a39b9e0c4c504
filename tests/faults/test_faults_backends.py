"""Fault suite, backends: one that raises, one that hangs, one that is slow, in one run.

A real History with the csv backend beside three bad ones. What must hold:
``update()`` always returns (a hang here fails through the test timeout, not a
clock), the healthy backend and the JSONL get every step, ``finalize()``
writes every output and returns within the finish deadline, and the finish
report names each bad backend. Nothing here measures time.
"""

from __future__ import annotations

import logging
import threading

import pytest
from _faults import csv_frame, jsonl_lines, metric_steps

from ezpz.tracker import TrackerBackend, register_backend, unregister_backend

STEPS = 120


class Raises(TrackerBackend):
    name = "fault-raises"

    def __init__(self, **_):
        pass

    def log(self, metrics, step=None, commit=True):
        raise RuntimeError("backend bug in log")

    def log_config(self, config):
        raise ValueError("backend bug in log_config")

    def finish(self):
        raise OSError("backend bug in finish")


class Hangs(TrackerBackend):
    """A dead server: log() blocks until the test releases it."""

    name = "fault-hangs"
    release = threading.Event()
    entered = threading.Event()

    def __init__(self, **_):
        pass

    def log(self, metrics, step=None, commit=True):
        Hangs.entered.set()
        Hangs.release.wait()

    def log_config(self, config):
        pass

    def finish(self):
        Hangs.release.wait()


class Slow(TrackerBackend):
    """A slow server: every call waits on a condition that never comes (0.02 s)."""

    name = "fault-slow"
    calls = 0

    def __init__(self, **_):
        self._never = threading.Event()

    def log(self, metrics, step=None, commit=True):
        self._never.wait(0.02)
        Slow.calls += 1

    def log_config(self, config):
        pass

    def finish(self):
        pass


@pytest.fixture
def bad_backends(monkeypatch):
    monkeypatch.setenv("EZPZ_TRACKER_FINISH_TIMEOUT", "2")
    monkeypatch.setenv("EZPZ_TRACKER_QUEUE_SIZE", "1000000")  # no overflow drops under load
    monkeypatch.setenv("EZPZ_TRACK_MEMORY", "0")
    Hangs.release.clear()
    Hangs.entered.clear()
    for cls in (Raises, Hangs, Slow):
        register_backend(cls.name, cls)
    yield
    Hangs.release.set()  # let the abandoned worker thread end
    for cls in (Raises, Hangs, Slow):
        unregister_backend(cls.name)


def test_raising_hanging_and_slow_backends_never_stop_training(tmp_path, bad_backends, caplog):
    from ezpz.history import History

    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        hist = History(
            outdir=out,
            backends=["csv", Raises.name, Hangs.name, Slow.name],
            config={"lr": 0.1},
        )
        for step in range(STEPS):
            hist.update({"train/loss": 1.0 / (step + 1)}, step=step)  # returns every time
        assert Hangs.entered.wait(60)  # the hanging backend really is stuck in log()
        ds = hist.finalize(plot=False)
        report = hist.tracker.finish()  # finalize already finished it: the same report
        hist.close()

    assert ds.sizes["draw"] == STEPS
    assert csv_frame(out / "metrics.csv")["step"].tolist() == list(range(STEPS))
    records, torn = jsonl_lines(out / "metrics.jsonl")
    assert torn == [] and metric_steps(records) == list(range(STEPS))
    assert (out / "report.md").is_file() and (out / "train.h5").is_file()

    lanes = report.backends
    assert lanes["csv"].ok, lanes["csv"]
    assert lanes[Raises.name].failures.get("log: RuntimeError") == STEPS
    assert lanes[Hangs.name].timed_out
    assert not lanes[Slow.name].failures
    # one warning per kind of failure, not one per step
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("'fault-raises' failed in log()" in m for m in warnings) == 1, warnings
    assert Raises.name in str(report) and Hangs.name in str(report)
