"""Min/max envelope decimation: short series untouched, spikes and extrema always kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ezpz.plot.downsample import band_envelope, decimate, finite, minmax_indices


def test_short_series_is_returned_whole():
    y = np.array([3.0, 1.0, 2.0])
    assert minmax_indices(y, 10).tolist() == [0, 1, 2]
    x, yd = decimate(np.arange(3), y, 10)
    assert x.tolist() == [0, 1, 2] and yd.tolist() == [3.0, 1.0, 2.0]


def test_long_series_is_reduced_and_keeps_every_spike():
    rng = np.random.default_rng(1)
    n = 1_000_000
    y = rng.standard_normal(n)
    spikes = rng.choice(n, size=20, replace=False)
    y[spikes[:10]] = 50.0 + np.arange(10)  # upward spikes, each different
    y[spikes[10:]] = -50.0 - np.arange(10)  # downward spikes
    x, yd = decimate(np.arange(n), y, 2000)
    assert yd.size <= 2002
    assert np.all(np.diff(x) > 0), "samples keep their order"
    kept = set(x.tolist())
    # 20 spikes among 1000 buckets: one per bucket with overwhelming probability,
    # and a spike is the min or max of its bucket, so every one is kept.
    assert set(spikes.tolist()) <= kept
    assert yd.max() == y.max() and yd.min() == y.min()
    np.testing.assert_array_equal(yd, y[x])


def test_nan_is_skipped_inside_a_bucket_but_an_all_nan_bucket_stays_a_gap():
    y = np.arange(100, dtype=np.float64)
    y[10:20] = np.nan  # bucket 1 (size 10) entirely NaN
    y[35] = np.nan  # one NaN in bucket 3
    idx = minmax_indices(y, 20)  # 10 buckets of 10
    kept = y[idx]
    assert np.isnan(kept).sum() == 1, "one NaN marks the gap of the all-NaN bucket"
    assert 30.0 in kept and 39.0 in kept, "bucket 3's min and max despite its NaN"
    assert np.nanmin(kept) == 0.0 and np.nanmax(kept) == 99.0


def test_infinities_win_their_bucket_and_finite_turns_them_into_nan():
    y = np.zeros(1000)
    y[500] = np.inf
    y[700] = -np.inf
    idx = minmax_indices(y, 100)
    assert 500 in idx and 700 in idx
    f = finite(y)
    assert np.isnan(f[500]) and np.isnan(f[700]) and np.isinf(y[500]), "input untouched"
    assert f is not y


def test_band_envelope_covers_the_original_band():
    rng = np.random.default_rng(2)
    n = 100_003  # not a multiple of the bucket count
    mid = rng.standard_normal(n).cumsum()
    width = np.abs(rng.standard_normal(n))
    width[77_777] = 1000.0  # a spike in the spread
    lo, hi = mid - width, mid + width
    band = band_envelope(np.arange(n), lo, hi, 1000)
    assert band.x.size <= 1000
    size = -(-n // 1000)
    for i in (0, 12_345, 77_777, n - 1):
        b = i // size
        assert band.lo[b] <= lo[i] and band.hi[b] >= hi[i]
    assert band.hi.max() == hi.max() and band.lo.min() == lo.min()


def test_band_envelope_all_nan_bucket_is_nan():
    lo = np.zeros(100)
    hi = np.ones(100)
    lo[:10] = hi[:10] = np.nan
    band = band_envelope(np.arange(100), lo, hi, 10)
    assert np.isnan(band.lo[0]) and np.isnan(band.hi[0])
    assert band.lo[1] == 0.0 and band.hi[1] == 1.0


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="max_points"):
        minmax_indices(np.zeros(10), 1)


@settings(max_examples=200, deadline=None)
@given(
    y=arrays(
        np.float64,
        st.integers(1, 3000),
        elements=st.floats(allow_nan=True, allow_infinity=False, width=64),
    ),
    max_points=st.integers(2, 500),
)
def test_extrema_and_order_are_preserved_for_any_series(y, max_points):
    idx = minmax_indices(y, max_points)
    assert idx.size <= max(max_points + 2, y.size if y.size <= max_points else 0)
    assert np.all(np.diff(idx) > 0) and idx[0] == 0 and idx[-1] == y.size - 1
    finite_y = y[~np.isnan(y)]
    kept = y[idx]
    if finite_y.size:
        assert np.nanmax(kept) == finite_y.max()
        assert np.nanmin(kept) == finite_y.min()
