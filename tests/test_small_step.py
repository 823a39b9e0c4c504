"""The reducer's generated small-layout step against the numpy path's formulas, bit for bit.

No MPI here: the receive buffers are filled as an exchange over ``size`` ranks
would leave them, and every output is compared with what ``Reducer._pack`` and
``Reducer._finish_fast`` compute in numpy from the same buffers.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from ezpz.history.reduce import _H, SMALL_LAYOUT
from ezpz.history.small_step import make_small_step

SIZE = 3  # a rank count where x / n and x * (1 / n) differ
INV = 1.0 / SIZE
KEEP = 1.0 - (SIZE + 2.0) * float(np.finfo(np.float64).eps) / 1e-9


def _step(m: int, fp: float = 0.123):
    sum_send, max_send = np.zeros(5 * m), np.zeros(_H + 2 * m)
    sum_recv, max_recv = np.empty(5 * m), np.empty(_H + 2 * m)
    pack, finish = make_small_step(
        m,
        pack_sum=struct.Struct(f"{2 * m}d").pack_into,
        sum_bytes=sum_send.data.cast("B"),
        pack_max=struct.Struct(f"{_H + 2 * m}d").pack_into,
        max_bytes=max_send.data.cast("B"),
        fp=fp,
        sums=sum_recv[: 2 * m],
        maxes=max_recv[_H:],
        inv=INV,
        keep=KEEP,
    )
    return pack, finish, (sum_send, max_send, sum_recv, max_recv)


@pytest.mark.parametrize("m", [1, 2, 7, SMALL_LAYOUT])
def test_pack_writes_the_numpy_paths_buffers(m):
    pack, _, (sum_send, max_send, _, _) = _step(m, fp=0.5)
    rng = np.random.default_rng(m)
    xs = (rng.normal(size=m) * 10.0 ** rng.integers(-5, 5, m)).tolist()
    shift = rng.normal(size=m).tolist()
    assert pack(xs, shift) is True
    x, s = np.array(xs), np.array(shift)
    d = x - s
    assert sum_send[: 2 * m].tobytes() == np.concatenate([d, d * d]).tobytes()
    header = [0.0, 0.5, -0.5, 0.0, 0.0]
    assert max_send.tobytes() == np.concatenate([header, x, -x]).tobytes()
    assert not sum_send[2 * m :].any()  # the counts are the reducer's to set


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e200])
def test_pack_refuses_nonfinite_and_overflow_without_writing(bad):
    pack, _, (sum_send, max_send, _, _) = _step(4)
    assert pack([1.0, bad, 2.0, 3.0], [0.0] * 4) is False  # 1e200**2 overflows
    assert not sum_send.any() and not max_send.any()


def test_pack_raises_for_values_that_are_not_numbers():
    pack, _, _ = _step(2)
    with pytest.raises(TypeError):
        pack([1.0, "2.0"], [0.0, 0.0])
    with pytest.raises(OverflowError):
        pack([1.0, 10**400], [0.0, 0.0])


def _exchange(rng, m, sum_recv, max_recv):
    """Receive buffers as SIZE ranks' values around a shift leave them."""
    shift = (rng.normal(size=m) * 10.0 ** rng.integers(-3, 6, m)).tolist()
    ranks = np.array(shift) + rng.normal(size=(SIZE, m)) * 10.0 ** rng.integers(-4, 2, m)
    d = ranks - np.array(shift)
    sum_recv[:m], sum_recv[m : 2 * m] = d.sum(axis=0), (d * d).sum(axis=0)
    max_recv[_H : _H + m], max_recv[_H + m :] = ranks.max(axis=0), (-ranks).max(axis=0)
    return shift


def _numpy_finish(m, shift, last, lin, sum_recv, max_recv):
    """Reducer._finish_fast's arithmetic, on the same buffers."""
    s1, s2 = sum_recv[:m], sum_recv[m : 2 * m]
    inv = np.full(m, INV)
    q = s1 * inv
    mean = q + np.array(shift)
    t = s1 * q
    ill = t > s2 * np.full(m, KEEP)
    std = np.sqrt((s2 - t) * inv)
    xmax, xmin = max_recv[_H : _H + m] * 1.0, max_recv[_H + m :] * -1.0
    nxt = mean
    if lin is not None:
        nxt = (mean - np.array(last)) * np.array(lin) + mean
    return ill.any(), np.concatenate([mean, xmax, xmin, std]), mean, nxt


@pytest.mark.parametrize("m", [1, 3, 10, SMALL_LAYOUT])
@pytest.mark.parametrize("counters", [False, True])
def test_finish_matches_the_numpy_formulas(m, counters):
    _, finish, (_, _, sum_recv, max_recv) = _step(m)
    rng = np.random.default_rng(100 * m + counters)
    checked = 0
    for _ in range(200):
        shift = _exchange(rng, m, sum_recv, max_recv)
        last = rng.normal(size=m).tolist()
        lin = (rng.random(m) < 0.5).astype(float).tolist() if counters else None
        ill, flat, mean, nxt = _numpy_finish(m, shift, last, lin, sum_recv, max_recv)
        got = finish(shift, last, lin)
        if ill:
            assert got is None  # the rounding guard's step is the caller's
            continue
        assert got is not None
        checked += 1
        g_flat, g_mean, g_next = got
        assert np.array(g_flat).tobytes() == flat.tobytes()
        assert np.array(g_mean).tobytes() == mean.tobytes()
        assert np.array(g_next).tobytes() == nxt.tobytes()
    assert checked > 100


def test_finish_hands_back_a_replicated_key():
    """Every rank's value equal: S2 is (nearly) S1²/n, the guard flags it."""
    m = 2
    _, finish, (_, _, sum_recv, max_recv) = _step(m)
    d = np.array([[0.25, 0.001], [0.25, -0.002], [0.25, 0.003]])
    sum_recv[:m], sum_recv[m : 2 * m] = d.sum(axis=0), (d * d).sum(axis=0)
    max_recv[_H:] = np.concatenate([d.max(axis=0), (-d).max(axis=0)])
    assert finish([0.0, 0.0], [0.0, 0.0], None) is None


def test_code_is_made_once_per_size():
    from ezpz.history import small_step

    _step(5)
    factory = small_step._FACTORIES[5]
    _step(5, fp=0.9)
    assert small_step._FACTORIES[5] is factory
    with pytest.raises(ValueError, match="at least one key"):
        _step(0)
