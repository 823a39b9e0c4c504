"""poll_until: free spins, then yielding spins, then sleeps; a deadline raises."""

from __future__ import annotations

import time

import pytest

from ezpz.history import collective_timeout as ct


class Request:
    """A request that completes on its ``after``-th Test."""

    def __init__(self, after: float) -> None:
        self.after, self.tests = after, 0

    def Test(self) -> bool:  # noqa: N802 (mpi4py's name)
        self.tests += 1
        return self.tests >= self.after


@pytest.fixture
def calls(monkeypatch):
    seen = {"yield": 0, "sleep": 0}

    def count(name):
        def bump(*_args):
            seen[name] += 1

        return bump

    monkeypatch.setattr(ct, "_yield", count("yield"))
    monkeypatch.setattr(ct.time, "sleep", count("sleep"))
    return seen


def test_balanced_wait_neither_yields_nor_sleeps(calls):
    req = Request(after=ct._FREE_SPINS - 1)
    ct.poll_until([req], time.monotonic() + 60, lambda: "late")
    assert req.tests == ct._FREE_SPINS - 1
    assert calls == {"yield": 0, "sleep": 0}


def test_a_late_peer_gets_the_cpu_before_any_sleep(calls, monkeypatch):
    """Past the free spins every test is followed by a yield (more ranks than cores)."""
    monkeypatch.setattr(ct, "_SPIN_SECONDS", 600.0)  # a preempted test run stays in the spin
    after = ct._FREE_SPINS + 50
    ct.poll_until([Request(after), Request(1)], time.monotonic() + 60, lambda: "late")
    assert calls["yield"] >= 50 and calls["sleep"] == 0


def test_deadline_raises_with_the_message(monkeypatch):
    monkeypatch.setattr(ct, "_SPIN_SECONDS", 0.0)
    started = time.monotonic()
    with pytest.raises(ct.CollectiveTimeoutError, match="step 7"):
        ct.poll_until([Request(float("inf"))], started + 0.05, lambda: "step 7 timed out")
    assert time.monotonic() - started < 30  # it ended (not a timing assert on speed)
