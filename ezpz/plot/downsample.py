"""Min/max envelope decimation for drawing long series.

A line drawn from 1M samples looks the same as one drawn from a few thousand
well-chosen samples: per pixel column only the lowest and the highest value
are visible. So each series is cut into equal buckets and, per bucket, the
samples holding its minimum and its maximum are kept, in their original
order. Spikes (and the global extrema) survive exactly; drawing cost depends
on the bucket count, not on the series length.

Everything here is vectorised numpy (no Python loop over samples), NaN-aware
(a bucket of NaNs keeps one NaN so gaps stay gaps), and returns the input
unchanged when it is already short enough.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Band", "all_finite", "band_envelope", "decimate", "finite", "minmax_indices"]

#: default number of points a decimated series keeps (two per bucket)
DEFAULT_MAX_POINTS = 4000


def all_finite(y: np.ndarray) -> bool:
    """Whether ``y`` holds no NaN or inf: one summing pass, no temporary array.

    (A sum of huge finite values can overflow to inf; then callers merely take
    their slower, exact path.)
    """
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf -> NaN is the expected answer
        return bool(np.isfinite(np.add.reduce(y, axis=None)))


def finite(y: np.ndarray) -> np.ndarray:
    """``y`` as float64 with +-inf turned into NaN (drawing libraries choke on inf)."""
    out = np.asarray(y, dtype=np.float64)
    if all_finite(out):
        return out
    bad = np.isinf(out)
    if bad.any():
        out = out.copy()
        out[bad] = np.nan
    return out


def _per_bucket(y: np.ndarray, size: int, reduce) -> np.ndarray:
    """``reduce(bucket, axis=1)`` for consecutive buckets of ``size`` samples (last one shorter).

    Full buckets are a reshaped view of ``y``: no copy of a long series is made.
    """
    m = y.shape[0] // size
    out = reduce(y[: m * size].reshape(m, size), axis=1)
    if m * size < y.shape[0]:
        out = np.append(out, reduce(y[m * size :][None, :], axis=1))
    return out


def minmax_indices(y: np.ndarray, max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """Sorted indices into ``y`` that keep each bucket's minimum and maximum.

    At most ``max_points`` (+2 for the end points) indices; all of ``range(len(y))``
    when ``y`` is short enough. NaNs are ignored inside a bucket unless the whole
    bucket is NaN, in which case one NaN sample is kept so the line shows a gap.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    size = -(-n // (max_points // 2))  # ceil: at most max_points // 2 buckets
    lo_src = hi_src = y
    nan = None if all_finite(y) else np.isnan(y)
    if (
        nan is not None and nan.any()
    ):  # NaN would win argmin/argmax; an all-NaN bucket still yields one NaN index
        lo_src = np.where(nan, np.inf, y)
        hi_src = np.where(nan, -np.inf, y)
    starts = np.arange(0, n, size)
    i_lo = starts + _per_bucket(lo_src, size, np.argmin)
    i_hi = starts + _per_bucket(hi_src, size, np.argmax)
    return np.unique(np.concatenate(([0, n - 1], i_lo, i_hi)))


def decimate(
    x: np.ndarray, y: np.ndarray, max_points: int = DEFAULT_MAX_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` reduced to at most ~``max_points`` samples with min/max per bucket kept."""
    idx = minmax_indices(y, max_points)
    return np.asarray(x)[idx], np.asarray(y, dtype=np.float64)[idx]


class Band(NamedTuple):
    """A shaded band reduced to buckets: x at the bucket start, lowest low, highest high."""

    x: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def band_envelope(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_points: int = DEFAULT_MAX_POINTS
) -> Band:
    """Reduce a band (e.g. cross-rank min..max, or mean-std..mean+std) to ``max_points`` buckets.

    Each bucket spans from the lowest ``lo`` to the highest ``hi`` inside it, so
    the reduced band always covers the original one (no spike is shaved off).
    """
    x = np.asarray(x)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    n = x.shape[0]
    if n <= max_points:
        return Band(x, lo, hi)
    size = -(-n // max_points)
    return Band(
        x[np.arange(0, n, size)], _reduce_nan(lo, size, np.min), _reduce_nan(hi, size, np.max)
    )


def _reduce_nan(y: np.ndarray, size: int, reduce) -> np.ndarray:
    """Per-bucket min or max ignoring NaN; an all-NaN bucket stays NaN (a gap in the band)."""
    if all_finite(y):
        return _per_bucket(y, size, reduce)
    nan = np.isnan(y)
    if not nan.any():  # only +-inf: they are legitimate extremes
        return _per_bucket(y, size, reduce)
    out = _per_bucket(np.where(nan, np.inf if reduce is np.min else -np.inf, y), size, reduce)
    out[~_per_bucket(~nan, size, np.any)] = np.nan
    return out
