"""Reducer on one rank (COMM_SELF) and its configuration rules."""

from __future__ import annotations

import logging

import numpy as np
import pytest

MPI = pytest.importorskip("mpi4py.MPI")

from ezpz.history.collective_timeout import timeout_from_env  # noqa: E402
from ezpz.history.reduce import Reducer, ReduceResult, statistics_enabled  # noqa: E402


@pytest.fixture
def reducer():
    r = Reducer(MPI.COMM_SELF)
    yield r
    r.close()


def test_single_rank_statistics_are_the_value(reducer):
    keys = ("loss", "big", "neg")
    for step, values in enumerate([[0.5, 1e5, -3.0], [0.25, 1e5 + 1, -7.5]]):
        result = reducer.reduce(keys, np.array(values), step)
        assert result.keys == keys
        assert result.stats["mean"].tolist() == values
        assert result.stats["max"].tolist() == values
        assert result.stats["min"].tolist() == values
        assert result.stats["std"].tolist() == [0.0, 0.0, 0.0]


def test_single_rank_nonfinite(reducer):
    result = reducer.reduce(("a", "b", "c"), np.array([np.nan, np.inf, 1.0]), 0)
    mean = result.stats["mean"]
    assert np.isnan(mean[0]) and mean[1] == np.inf and mean[2] == 1.0
    assert np.isnan(result.stats["std"][:2]).all() and result.stats["std"][2] == 0.0
    assert result.stats["nonfinite"].tolist() == [1.0, 1.0, 0.0]


def test_key_set_changes_on_one_rank(reducer):
    assert reducer.reduce(("a",), [1.0], 0).keys == ("a",)
    result = reducer.reduce(("b", "a"), [2.0, 3.0], 1)
    assert result.keys == ("a", "b")  # layout order: first seen first
    assert result.stats["mean"].tolist() == [3.0, 2.0]
    assert reducer.reduce((), [], 2).keys == ()


def test_bad_input_is_a_clear_error(reducer):
    with pytest.raises(ValueError, match="2 keys but 1 values"):
        reducer.reduce(("a", "b"), [1.0], 0)
    reducer.reduce(("a",), [1.0], 0)
    with pytest.raises(ValueError, match="duplicate"):
        reducer.reduce(("a", "a"), [1.0, 2.0], 1)


@pytest.mark.parametrize(
    "kw", [{"hierarchical_threshold": -1}, {"ranks_per_node": 0}, {"ranks_per_node": 1.5}]
)
def test_bad_arguments_raise(kw):
    with pytest.raises(ValueError):
        Reducer(MPI.COMM_SELF, **kw)


def test_bad_environment_falls_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setenv("EZPZ_HIERARCHICAL_THRESHOLD", "many")
    monkeypatch.setenv("EZPZ_RANKS_PER_NODE", "-3")
    monkeypatch.setenv("EZPZ_COLLECTIVE_TIMEOUT", "soon")
    with caplog.at_level(logging.WARNING):
        r = Reducer(MPI.COMM_SELF)
    assert not r.hierarchical and r.timeout is None
    text = caplog.text
    assert "EZPZ_HIERARCHICAL_THRESHOLD" in text and "EZPZ_RANKS_PER_NODE" in text
    assert "EZPZ_COLLECTIVE_TIMEOUT" in text
    r.close()


def test_threshold_zero_makes_one_rank_hierarchical(monkeypatch):
    monkeypatch.setenv("EZPZ_HIERARCHICAL_THRESHOLD", "0")
    r = Reducer(MPI.COMM_SELF)
    assert r.hierarchical
    assert r.reduce(("x",), [4.0], 0).stats["mean"].tolist() == [4.0]
    r.close()


def test_timeout_setting(monkeypatch):
    monkeypatch.delenv("EZPZ_COLLECTIVE_TIMEOUT", raising=False)
    assert timeout_from_env(None) is None
    assert timeout_from_env(2) == 2.0
    assert timeout_from_env(0) is None
    monkeypatch.setenv("EZPZ_COLLECTIVE_TIMEOUT", "1.5")
    assert timeout_from_env(None) == 1.5
    monkeypatch.setenv("EZPZ_COLLECTIVE_TIMEOUT", "0")
    assert timeout_from_env(None) is None
    with pytest.raises(ValueError):
        timeout_from_env(float("nan"))


def test_statistics_switches(monkeypatch):
    for name in ("EZPZ_NO_DISTRIBUTED_HISTORY", "EZPZ_LOCAL_HISTORY"):
        monkeypatch.delenv(name, raising=False)
    assert statistics_enabled(None, 4)
    assert not statistics_enabled(None, 1)
    assert not statistics_enabled(False, 4)
    monkeypatch.setenv("EZPZ_LOCAL_HISTORY", "1")
    assert not statistics_enabled(True, 4)
    monkeypatch.setenv("EZPZ_LOCAL_HISTORY", "0")
    monkeypatch.setenv("EZPZ_NO_DISTRIBUTED_HISTORY", "true")
    assert not statistics_enabled(None, 4)


def test_entries_skip_not_applicable_rank_extrema():
    res = ReduceResult(
        ("dt", "loss"),
        {
            "mean": np.array([1.0, 2.0]),
            "max_rank": np.array([3.0, np.nan]),
        },
    )
    assert res.entries() == {"dt/mean": 1.0, "loss/mean": 2.0, "dt/max_rank": 3.0}


def test_extrema_on_one_rank():
    r = Reducer(MPI.COMM_SELF, extrema="dt")
    res = r.reduce(("dt", "loss"), [0.1, 0.2], 0)
    assert res.stats["max_rank"][0] == 0 and res.stats["min_rank"][0] == 0
    assert np.isnan(res.stats["max_rank"][1])
    r.close()


def test_layout_growth_is_capped(monkeypatch):
    import ezpz.history.reduce as reduce_mod

    monkeypatch.setattr(reduce_mod, "_MAX_LAYOUT", 8)
    r = Reducer(MPI.COMM_SELF)
    for step in range(20):  # a new key every step (e.g. per-epoch names)
        keys = ("loss", f"epoch{step}/acc")
        res = r.reduce(keys, [1.0, float(step)], step)
        assert res.keys == keys
        assert res.stats["mean"].tolist() == [1.0, float(step)]
        assert len(r._layout) <= 8
    r.close()
