"""Columnar storage: groups, growth, NaN fill for unlogged cells, memory."""

from __future__ import annotations

import numpy as np

from ezpz.history import store as store_mod
from ezpz.history.store import GroupStore, HistoryStore, HistoryView


def test_rows_and_columns_roundtrip_across_blocks():
    g = GroupStore("train")
    n = store_mod.BLOCK_ROWS * 2 + 17  # crosses block and pending boundaries
    for i in range(n):
        g.append(("a", "b"), [float(i), -float(i)], i, 100.0 + i)
    assert len(g) == n
    np.testing.assert_array_equal(g.column("a"), np.arange(n, dtype=float))
    np.testing.assert_array_equal(g.column("b"), -np.arange(n, dtype=float))
    np.testing.assert_array_equal(g.steps, np.arange(n))
    assert g.steps.dtype == np.int64
    np.testing.assert_array_equal(g.times, 100.0 + np.arange(n))


def test_changing_key_sets_fill_nan():
    g = GroupStore("")
    g.append(("a",), [1.0], 0, 0.0)
    g.append(("a", "b"), [2.0, 20.0], 1, 0.0)
    g.append(("b",), [30.0], 2, 0.0)
    np.testing.assert_array_equal(g.column("a"), [1.0, 2.0, np.nan])
    np.testing.assert_array_equal(g.column("b"), [np.nan, 20.0, 30.0])
    assert g.scalar_names() == ["a", "b"]


def test_vectors_nan_padded_to_widest():
    g = GroupStore("")
    r0 = g.append(("x",), [1.0], 0, 0.0)
    g.append_vector("v", r0, np.array([1.0, 2.0]))
    g.append(("x",), [2.0], 1, 0.0)
    r2 = g.append(("x",), [3.0], 2, 0.0)
    g.append_vector("v", r2, np.array([5.0, 6.0, 7.0]))
    v = g.vector("v")
    assert v.shape == (3, 3)
    np.testing.assert_array_equal(v[0], [1.0, 2.0, np.nan])
    assert np.isnan(v[1]).all()
    np.testing.assert_array_equal(v[2], [5.0, 6.0, 7.0])


def test_history_view_full_keys_and_copies():
    s = HistoryStore()
    s.group("train").append(("loss", "loss/mean"), [1.0, 1.5], 0, 0.0)
    s.group("").append(("lr",), [0.1], 0, 0.0)
    view = HistoryView(s)
    assert set(view) == {"train/loss", "train/loss/mean", "lr"}
    arr = view["train/loss"]
    arr[0] = 99.0
    assert view["train/loss"][0] == 1.0


def test_bytes_per_value_near_eight():
    g = GroupStore("")
    names = tuple(f"m{i}" for i in range(10))
    row = [0.5] * 10
    n = 12 * store_mod.BLOCK_ROWS  # whole blocks: the steady state of a long run
    for i in range(n):
        g.append(names, row, i, 0.0)
    per_value = g.nbytes() / (n * 10)  # includes the step and time columns
    assert per_value <= 10.0, per_value
    assert per_value >= 8.0  # float64: nothing silently downcast


def test_read_rows_matches_full_columns():
    g = GroupStore("")
    n = store_mod.BLOCK_ROWS + 300
    for i in range(n):
        g.append(("a",) if i % 3 else ("a", "b"), [float(i)] if i % 3 else [float(i), 1.0], i, i)
    for start, stop in [(0, 10), (store_mod.BLOCK_ROWS - 5, store_mod.BLOCK_ROWS + 5), (n - 1, n)]:
        steps, times, (a, b) = g.read_rows(["a", "b"], start, stop)
        np.testing.assert_array_equal(steps, np.arange(start, stop))
        np.testing.assert_array_equal(times, np.arange(start, stop, dtype=float))
        np.testing.assert_array_equal(a, g.column("a")[start:stop])
        np.testing.assert_array_equal(b, g.column("b")[start:stop])
