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
        size=float(SIZE),
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
    """Reducer._finish_fast's arithmetic (with _fix_ill's for replicated keys), same buffers.

    None where the step needs re-shifted sums: a flagged key whose values differ.
    """
    s1, s2 = sum_recv[:m], sum_recv[m : 2 * m]
    inv = np.full(m, INV)
    q = s1 * inv
    mean = q + np.array(shift)
    t = s1 * q
    ill = t > s2 * np.full(m, KEEP)
    m2 = s2 - t
    xmax, xmin = max_recv[_H : _H + m] * 1.0, max_recv[_H + m :] * -1.0
    if ill.any():
        same = ill & (xmax == xmin)
        if (ill & ~same).any():
            return None
        mean[same] = xmax[same]
        m2[same] = 0.0
        std = np.sqrt(np.maximum(m2, 0.0) / float(SIZE))
    else:
        std = np.sqrt(m2 * inv)
    nxt = mean
    if lin is not None:
        nxt = (mean - np.array(last)) * np.array(lin) + mean
    return np.concatenate([mean, xmax, xmin, std]), mean, nxt


def _same_bits(got, want) -> bool:
    if want is None or got is None:
        return got is want
    return all(np.array(g).tobytes() == w.tobytes() for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("m", [1, 3, 10, SMALL_LAYOUT])
@pytest.mark.parametrize("counters", [False, True])
def test_finish_matches_the_numpy_formulas(m, counters):
    _, finish, (_, _, sum_recv, max_recv) = _step(m)
    rng = np.random.default_rng(100 * m + counters)
    finished = 0
    for _ in range(200):
        shift = _exchange(rng, m, sum_recv, max_recv)
        last = rng.normal(size=m).tolist()
        lin = (rng.random(m) < 0.5).astype(float).tolist() if counters else None
        want = _numpy_finish(m, shift, last, lin, sum_recv, max_recv)
        got = finish(shift, last, lin)
        assert _same_bits(got, want)
        finished += got is not None
    assert finished > 100


def _buffers(values: list[list[float]], shift: list[float]):
    """One step's receive buffers: ``values[rank][key]``."""
    m = len(shift)
    _, finish, (_, _, sum_recv, max_recv) = _step(m)
    x = np.array(values)
    d = x - np.array(shift)
    sum_recv[:m], sum_recv[m : 2 * m] = d.sum(axis=0), (d * d).sum(axis=0)
    max_recv[_H:] = np.concatenate([x.max(axis=0), (-x).max(axis=0)])
    return finish, sum_recv, max_recv


def _sum_mean(x: float, shift: float) -> float:
    """The mean the sums give for a value every rank has: not always the value."""
    d = x - shift
    return (d + d + d) * INV + shift  # SIZE == 3 ranks


def _flagged(sum_recv, i: int) -> bool:
    """Whether the rounding guard flags key ``i``."""
    m = len(sum_recv) // 5
    s1, s2 = sum_recv[i], sum_recv[m + i]
    return bool(s1 * (s1 * INV) > s2 * KEEP)


@pytest.mark.parametrize("counters", [False, True])
def test_a_replicated_key_is_exact_without_another_collective(counters):
    """lr on a schedule: every rank has it, off the shift: its mean is it, its std 0."""
    shift, last = [3e-4, 1.5], [3.1e-4, 1.4]
    lr = next(v for v in np.linspace(1e-4, 9e-4, 1000).tolist() if _sum_mean(v, 3e-4) != v)
    finish, sum_recv, max_recv = _buffers([[lr, 1.0], [lr, 1.5], [lr, 2.25]], shift)
    assert _flagged(sum_recv, 0)
    lin = [1.0, 0.0] if counters else None
    got = finish(shift, last, lin)
    assert got is not None
    assert _same_bits(got, _numpy_finish(2, shift, last, lin, sum_recv, max_recv))
    flat = got[0]
    assert flat[0] == lr and flat[6] == 0.0  # lr's mean and std
    assert flat[7] > 0.0  # the other key keeps its spread


def test_a_flagged_key_with_a_spread_is_handed_back():
    """A jump far larger than the spread: the sums must be redone around the new mean."""
    finish, sum_recv, _ = _buffers([[1e6 + 0.1], [1e6 + 0.2], [1e6 + 0.3]], [0.0])
    assert _flagged(sum_recv, 0)
    assert finish([0.0], [0.0], None) is None


def test_code_is_made_once_per_size():
    from ezpz.history import small_step

    _step(5)
    factory = small_step._FACTORIES[5]
    _step(5, fp=0.9)
    assert small_step._FACTORIES[5] is factory
    with pytest.raises(ValueError, match="at least one key"):
        _step(0)
