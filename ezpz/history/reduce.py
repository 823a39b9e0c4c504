"""Cross-rank statistics (mean, max, min, population std) of one step's scalars.

The hot path is two buffer-based reductions, in flight together, on float64
buffers whose layout every rank already agrees on (the *layout* is a tuple of
keys). Buffers, their views and the two requests are made once per layout:
MPI-4 persistent collectives (``Allreduce_init``; a step is two ``Start``
and one wait, blocking or, under a timeout or signal handlers, polled with
``Test``) where the MPI has them, else two ``Iallreduce`` and one wait
(:meth:`Topology.pair`):

* ``MAX`` over ``[mismatch, fp, -fp, nonfinite, partial, x_0..x_m, -x_0..-x_m]``:
  a rank sets ``mismatch`` when it logged a key outside the layout; ``fp`` is
  the layout's fingerprint (a guard against ranks whose layouts diverged);
  ``nonfinite``/``partial`` send everyone down the general path; min is the
  max of ``-x``.
* ``SUM`` over ``[Σd, Σd², n, n_nonfinite, n_nan]`` per key, where
  ``d = x - shift`` and ``shift`` is a per-key prediction of this step's mean
  that every rank derives from earlier (identical) results, so one pass stays
  accurate when mean ≫ std.

A rank may log any subset of the layout (missing keys count as not logged).
A key outside the layout, on any rank, takes the slow path: the ranks
exchange their key lists, agree on the union (old layout first, then new keys
in rank order) and reduce again. Statistics of each key are over the ranks
that logged it.

Non-finite values: statistics equal what numpy computes over the gathered
values (``np.mean``, ``np.max``, ``np.min``, ``np.std``): a NaN on any rank
makes all four NaN; +inf/-inf make mean ±inf (NaN when both), std NaN, and
max/min ±inf. A ``nonfinite`` count says how many ranks sent NaN/±inf.

Rare extra collective: when the shift prediction was far off (first step of a
key with mean ≫ std, a jump), the sums for those keys are redone once with
this step's mean as the shift.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from ezpz._env import env_flag, env_int
from ezpz.history.collective_timeout import timeout_from_env
from ezpz.history.hierarchy import Topology
from ezpz.history.keys import STAT_SUFFIXES
from ezpz.history.small_step import Finish, Pack, make_small_step

log = logging.getLogger(__name__)

THRESHOLD_ENV = "EZPZ_HIERARCHICAL_THRESHOLD"
RANKS_PER_NODE_ENV = "EZPZ_RANKS_PER_NODE"
DEFAULT_HIERARCHICAL_THRESHOLD = 384
OFF_ENVS = ("EZPZ_NO_DISTRIBUTED_HISTORY", "EZPZ_LOCAL_HISTORY")

_EPS = float(np.finfo(np.float64).eps)
# Redo a key's sums when the rounding bound on its variance exceeds this
# relative error; std's relative error is then at most half of it (5e-10),
# inside the 1e-9 promised, and typically ~1e-15.
_VAR_REL_TOL = 1e-9
# Keys predicted by linear extrapolation (counters) stay below this magnitude, so
# the fast path's extrapolation cannot overflow (Reducer._finish_fast).
_LIN_LIMIT = 1e300
# A layout that grew past this many keys is rebuilt from the current step.
_MAX_LAYOUT = 4096
_POSITION_CACHE = 64
# MAX-buffer header: mismatch, fingerprint, -fingerprint, any non-finite, partial key set.
_H = 5
_SIGNS = np.array([[1.0], [-1.0]])
# Layouts up to this many keys take the pure-Python step (Reducer._reduce_small,
# code written out per key: ezpz/history/small_step.py): at a few tens of keys it
# beats ~16 numpy calls, each with a microsecond of dispatch on arrays this small.
SMALL_LAYOUT = 32
_F64 = np.dtype(np.float64)
_count_nonzero = np.count_nonzero
_isfinite = math.isfinite
_sqrt = math.sqrt


# -- configuration --------------------------------------------------------------


def statistics_enabled(distributed_history: bool | None, world_size: int) -> bool:
    """Whether History should reduce statistics across ranks.

    Off with one rank, with ``distributed_history=False``, or when
    ``EZPZ_NO_DISTRIBUTED_HISTORY`` / ``EZPZ_LOCAL_HISTORY`` is set to 1.
    ``None`` (auto) means on whenever there are several ranks.
    """
    if world_size <= 1 or distributed_history is False:
        return False
    return not any(env_flag(name) for name in OFF_ENVS)


def _int_setting(value: int | None, env: str, default: int | None, minimum: int) -> int | None:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{env.lower()} must be an integer >= {minimum}, got {value!r}")
        return int(value)
    return env_int(env, default, minimum=minimum)


def _fingerprint(layout: tuple[str, ...]) -> float:
    """A 48-bit hash of the layout, exact as a float64, equal on every rank."""
    digest = hashlib.blake2b(json.dumps(layout).encode(), digest_size=6).digest()
    return float(int.from_bytes(digest, "little"))


# -- results --------------------------------------------------------------------


class ReduceResult:
    """Statistics of one step, identical on every rank.

    ``stats[suffix][i]`` belongs to ``keys[i]``. Always present: ``mean``,
    ``max``, ``min``, ``std``. Present only when they say something:
    ``count`` (ranks that logged the key; when some key was not logged by
    every rank), ``nonfinite`` (ranks whose value was NaN/±inf; when there
    was one), ``max_rank``/``min_rank`` (for the keys opted in through
    ``extrema``; NaN for the other keys).

    The reducer's small-layout step hands over the four statistics as one
    Python list (``flat``); ``stats`` then builds its arrays on first use, so
    History, which only wants the list, never pays for them.
    """

    __slots__ = ("keys", "_stats", "block", "_flat")

    def __init__(
        self,
        keys: tuple[str, ...],
        stats: dict[str, np.ndarray] | None = None,
        block: np.ndarray | None = None,
        *,
        flat: list[float] | None = None,
    ) -> None:
        if stats is None and flat is None:
            stats = {}
        self.keys = keys
        self._stats = stats  # None: built from ``flat`` on first use
        #: the stats as one ``[len(stats), len(keys)]`` array, rows in ``stats`` order,
        #: when the reducer produced them that way; else None
        self.block = block
        self._flat = flat  # mean, max, min, std, each in keys order

    @property
    def stats(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            block = np.array(self._flat, dtype=np.float64).reshape(len(STAT_SUFFIXES), -1)
            rows = list(block)
            rows[0].flags.writeable = False  # as the numpy path's mean
            self.block = block
            self._stats = dict(zip(STAT_SUFFIXES, rows, strict=True))
        return self._stats

    @property
    def suffixes(self) -> tuple[str, ...]:
        """The statistics present, in ``stats`` order (the four without building arrays)."""
        return STAT_SUFFIXES if self._stats is None else tuple(self._stats)

    def __repr__(self) -> str:
        return f"ReduceResult(keys={self.keys!r}, stats={self.stats!r})"

    def flat_values(self) -> list[float]:
        """Every statistic as one list: ``stats`` in order, each in ``keys`` order."""
        if self._flat is not None:
            return self._flat
        if self.block is not None:
            flat: list[float] = self.block.ravel().tolist()
        elif self.stats:
            flat = np.concatenate(list(self.stats.values())).tolist()
        else:
            flat = []
        return flat

    def entries(self) -> dict[str, float]:
        """``{"<key>/<suffix>": value}`` for History, skipping not-applicable extras."""
        out: dict[str, float] = {}
        for suffix, column in self.stats.items():
            skip_nan = suffix in ("max_rank", "min_rank")
            for key, value in zip(self.keys, column.tolist(), strict=True):
                if skip_nan and value != value:
                    continue
                out[f"{key}/{suffix}"] = value
        return out


# -- the reducer ----------------------------------------------------------------


class Reducer:
    """Computes per-key cross-rank statistics, one ``reduce`` call per step.

    ``reduce`` is collective over ``comm``: every rank calls it once per step
    (a rank with no scalars passes empty keys). Construction is collective too
    when the reduction is hierarchical.
    """

    def __init__(
        self,
        comm: Any,
        *,
        hierarchical_threshold: int | None = None,
        ranks_per_node: int | None = None,
        timeout: float | None = None,
        extrema: Iterable[str] = (),
    ) -> None:
        self.comm = comm
        self.size = comm.Get_size()
        self.rank = comm.Get_rank()
        threshold = _int_setting(
            hierarchical_threshold, THRESHOLD_ENV, DEFAULT_HIERARCHICAL_THRESHOLD, 0
        )
        per_node = _int_setting(ranks_per_node, RANKS_PER_NODE_ENV, None, 1)
        self.timeout = timeout_from_env(timeout)
        self.threshold = threshold
        self.hierarchical = threshold is not None and self.size > threshold
        self.topology = Topology(
            comm, hierarchical=self.hierarchical, ranks_per_node=per_node, timeout=self.timeout
        )
        if isinstance(extrema, str):
            extrema = (extrema,)
        self.extrema = tuple(dict.fromkeys(extrema))
        self._size_f = float(self.size)
        self._inv_size = 1.0 / self.size
        # Redo a key when M2 < factor * S2 (rounding bound of S2 - S1²/n).
        self._ill_factor = (self.size + 2.0) * _EPS / _VAR_REL_TOL
        self._keep_factor = 1.0 - self._ill_factor
        from mpi4py import MPI

        self._MAX, self._SUM = MPI.MAX, MPI.SUM
        self._pair: Any = None
        #: layouts up to this many keys take the pure-Python step (0: numpy always)
        self.small_layout = SMALL_LAYOUT
        self._set_layout(())

    # -- layout state (identical on every rank) ----------------------------------

    def _set_layout(self, layout: tuple[str, ...], old: dict[str, float] | None = None) -> None:
        m = len(layout)
        self._layout = layout
        self._index = {key: i for i, key in enumerate(layout)}
        self._positions: dict[tuple[str, ...], np.ndarray] = {}
        self._max_send = np.zeros(_H + 2 * m)
        self._max_recv = np.empty(_H + 2 * m)
        self._max_pair = self._max_send[_H:].reshape(2, m)  # rows: x, -x
        self._sum_send = np.zeros(5 * m)
        self._sum_recv = np.empty(5 * m)
        self._sum_send[2 * m : 3 * m] = 1.0  # counts for a rank that logged every key
        self._sum_dirty = False
        # Views into the receive buffers, made once per layout for _finish_fast.
        self._s1, self._s2 = self._sum_recv[:m], self._sum_recv[m : 2 * m]
        self._rxx = self._max_recv[_H:].reshape(2, m)
        self._max_header = self._max_recv[:_H]
        self._inv_vec = np.full(m, self._inv_size)
        self._keep_vec = np.full(m, self._keep_factor)
        self._signs2 = np.repeat(_SIGNS, m, axis=1)
        self._make_pair()
        fp = _fingerprint(layout)
        self._max_send[1], self._max_send[2] = fp, -fp
        # Shift = predicted mean: the last mean, or for keys where that missed
        # badly (counters, timestamps) the linear extrapolation of the last two.
        old = old or {}
        self._last = np.array([old.get(k, 0.0) for k in layout])
        self._prev = self._last.copy()
        self._shift = self._last.copy()
        self._lin_mask = np.zeros(m, dtype=bool)
        self._lin_f = np.zeros(m)  # the mask as 0.0/1.0, for the fast path's arithmetic
        self._lin_any = False
        self._extrema_pos = np.array(
            [self._index[k] for k in self.extrema if k in self._index], dtype=np.intp
        )
        self._keys_cache: dict[bytes, tuple[str, ...]] = {}
        # The small-layout step's state as Python lists (see _to_lists/_to_arrays).
        self._in_lists = False
        self._shift_l: list[float] = []
        self._last_l: list[float] = []
        self._prev_l: list[float] = []
        self._lin_l: list[float] = []
        self._s12 = self._sum_recv[: 2 * m]
        self._rxx_flat = self._max_recv[_H:]
        # pack/finish of the small step, bound to this layout's buffers (None: the
        # numpy path always; extrema need its MAXLOC exchange). The packers write
        # the send arrays' bytes (mpi4py sends the arrays themselves).
        self._small_fns: tuple[Pack, Finish] | None = None
        if 0 < m <= self.small_layout and not self._extrema_pos.size:
            self._small_fns = make_small_step(
                m,
                pack_sum=struct.Struct(f"{2 * m}d").pack_into,
                sum_bytes=self._sum_send.data.cast("B"),
                pack_max=struct.Struct(f"{_H + 2 * m}d").pack_into,
                max_bytes=self._max_send.data.cast("B"),
                fp=fp,
                sums=self._s12,
                maxes=self._rxx_flat,
                size=self._size_f,
                keep=self._keep_factor,
            )

    def _make_pair(self) -> None:
        """The two reductions of a step over the current buffers (persistent where MPI has them)."""
        if self._pair is not None:
            self.topology.free_pair(self._pair)
        self._pair = self.topology.pair(
            (self._max_send, self._max_recv, self._MAX),
            (self._sum_send, self._sum_recv, self._SUM),
        )

    def _positions_of(self, keys: tuple[str, ...]) -> np.ndarray | None | bool:
        """Layout positions of ``keys``; None when keys == layout; False when not a subset."""
        if keys == self._layout:
            return None
        pos = self._positions.get(keys)
        if pos is not None:
            return pos
        index = self._index
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate metric keys in one update: {keys!r}")
        if not all(k in index for k in keys):
            return False
        pos = np.fromiter((index[k] for k in keys), dtype=np.intp, count=len(keys))
        if len(self._positions) >= _POSITION_CACHE:
            self._positions.clear()
        self._positions[keys] = pos
        return pos

    # -- packing -----------------------------------------------------------------

    def _pack(self, values: np.ndarray, pos: np.ndarray | None | bool) -> tuple[np.ndarray, Any]:
        """Fill the send buffers; return this rank's values in layout order and finiteness."""
        m = len(self._layout)
        mx, sm = self._max_send, self._sum_send
        if pos is False:  # a key outside the layout: only the flag matters
            mx[0] = 1.0
            return np.empty(0), None
        mx[0] = 0.0
        if pos is None:
            d = sm[:m]
            np.subtract(values, self._shift, out=d)
            np.multiply(d, d, out=sm[m : 2 * m])
            if math.isfinite(d.dot(d)):  # NaN/inf (or overflow) poison the dot product
                np.multiply(values, _SIGNS, out=self._max_pair)
                if self._sum_dirty:
                    mx[3] = mx[4] = 0.0
                    self._reset_counts(m)
                return values, True
            x, logged = values, np.ones(m, dtype=bool)
        else:
            x = np.zeros(m)
            logged = np.zeros(m, dtype=bool)
            x[pos] = values
            logged[pos] = True
        with np.errstate(invalid="ignore", over="ignore"):
            nan = np.isnan(x)
            finite = np.isfinite(x) & logged
            valid = logged & ~nan
            mx[_H : _H + m] = np.where(valid, x, -np.inf)
            mx[_H + m :] = np.where(valid, -x, -np.inf)
            d = np.where(finite, x - self._shift, 0.0)
            sm[:m] = d
            sm[m : 2 * m] = d * d
        nonfinite = logged & ~finite
        mx[3] = float(nonfinite.any())
        mx[4] = float(not logged.all())
        sm[2 * m : 3 * m] = logged
        sm[3 * m : 4 * m] = nonfinite
        sm[4 * m :] = nan
        self._sum_dirty = True
        return x, finite

    def _reset_counts(self, m: int) -> None:
        """SUM counts of a rank that logged every key, all finite (after a general step)."""
        self._sum_send[2 * m : 3 * m] = 1.0
        self._sum_send[3 * m :] = 0.0
        self._sum_dirty = False

    # -- the step ------------------------------------------------------------------

    def reduce(self, keys: tuple[str, ...], values: Any, step: int | None = None) -> ReduceResult:
        """Statistics of this step's scalars over the ranks of ``comm`` (collective).

        The returned arrays are fresh each step; ``mean`` is read-only because
        the reducer keeps it to predict the next step's shift.
        """
        if type(keys) is not tuple:
            keys = tuple(keys)
        small = self._small_fns
        if small is not None and type(values) is list and keys == self._layout:
            result = self._reduce_small(small, keys, values, step)
            if result is not None:
                return result
        self._to_arrays()
        if type(values) is not np.ndarray or values.dtype is not _F64 or values.ndim != 1:
            values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape[0] != len(keys):
            raise ValueError(f"{len(keys)} keys but {values.shape[0]} values")
        x, finite = self._exchange(keys, values, step)
        return self._complete(keys, values, x, finite, step)

    def _complete(
        self,
        keys: tuple[str, ...],
        values: np.ndarray,
        x: np.ndarray,
        finite: Any,
        step: int | None,
    ) -> ReduceResult:
        """The numpy path after the first exchange: layout agreement, then the statistics."""
        # The MAX header as Python floats (one call): mismatch, fp, -fp, nonfinite, partial.
        mismatch, fp, neg_fp, nonfinite, partial = self._max_header.tolist()
        # A key outside the layout on some rank (or, as a guard, ranks whose
        # layouts differ): agree on the union and reduce again.
        if mismatch > 0.0 or fp != -neg_fp:
            self._agree_layout(keys, step)
            x, finite = self._exchange(keys, values, step)
            mismatch, fp, neg_fp, nonfinite, partial = self._max_header.tolist()
        if not self._layout:
            return ReduceResult((), {s: np.empty(0) for s in STAT_SUFFIXES})
        if nonfinite == 0.0 and partial == 0.0 and not self._extrema_pos.size:
            return self._finish_fast(x, step)
        return self._finish(x, finite, step)

    # -- the small-layout step (Python floats) ----------------------------------------

    def _reduce_small(
        self,
        small: tuple[Pack, Finish],
        keys: tuple[str, ...],
        xs: list[Any],
        step: int | None,
    ) -> ReduceResult | None:
        """The step for a layout of up to ``small_layout`` keys, logged in layout order.

        The same arithmetic as :meth:`_pack` and :meth:`_finish_fast`, operation
        for operation, on Python floats (straight-line code, :mod:`.small_step`),
        so the results are the numpy path's bit for bit. Returns None before any
        collective when this rank's values need the numpy path (NaN/±inf,
        overflow, values that are not numbers); any other case it cannot finish
        itself (another rank's new key or non-finite value) it hands to the numpy
        path after the exchange, and a key that needs re-shifted sums to
        :meth:`_finish_small_ill`.
        """
        if len(xs) != len(keys):
            return None  # the numpy path raises the error
        if not self._in_lists:
            self._to_lists()
        pack, finish = small
        try:
            if not pack(xs, self._shift_l):
                return None
        except (TypeError, OverflowError):
            return None
        if self._sum_dirty:
            self._reset_counts(len(xs))
        self._pair(step, "MAX+SUM")
        mismatch, fp_r, neg_fp, nonfinite, partial = self._max_header.tolist()
        if mismatch > 0.0 or fp_r != -neg_fp or nonfinite != 0.0 or partial != 0.0:
            self._to_arrays()
            x = np.array(xs, dtype=np.float64)
            return self._complete(keys, x, x, True, step)
        done = finish(self._shift_l, self._last_l, self._lin_l if self._lin_any else None)
        if done is None:
            return self._finish_small_ill(xs, step)
        flat, mean, shift = done
        self._prev_l = self._last_l
        self._last_l = mean
        self._shift_l = shift
        return ReduceResult(self._layout, None, flat=flat)

    def _finish_small_ill(self, xs: list[Any], step: int | None) -> ReduceResult:
        """A small step where the rounding guard flagged a key with a spread: :meth:`_fix_ill` on lists.

        A key whose value every rank shares (lr, a counter) gets its exact mean
        and std 0; a key with a spread gets re-shifted sums (one more
        collective). The division by size, not the product with 1/size, is
        _fix_ill's too.
        """
        m = len(xs)
        s = self._s12.tolist()
        r = self._rxx_flat.tolist()
        inv = self._inv_size
        s1, s2 = s[:m], s[m:]
        q = [a * inv for a in s1]
        mean = [a + b for a, b in zip(q, self._shift_l, strict=True)]
        t = [a * b for a, b in zip(s1, q, strict=True)]
        keep = self._keep_factor
        m2 = [b - a for a, b in zip(t, s2, strict=True)]
        spread = []
        for i, (a, b) in enumerate(zip(t, s2, strict=True)):
            if not a > b * keep:
                continue
            if r[i] == -r[m + i]:
                mean[i] = r[i]
                m2[i] = 0.0
            else:
                spread.append(i)
        if spread:
            self._resum_small(xs, spread, mean, m2, r, step)
        n = self._size_f
        std = [_sqrt(max(v, 0.0) / n) for v in m2]
        if self._lin_any:  # as in _finish_fast: mean + (mean - last) for counter-like keys
            shift = [
                (a - b) * f + a for a, b, f in zip(mean, self._last_l, self._lin_l, strict=True)
            ]
        else:
            shift = mean
        self._prev_l = self._last_l
        self._last_l = mean
        self._shift_l = shift
        return ReduceResult(self._layout, None, flat=mean + r[:m] + [-v for v in r[m:]] + std)

    def _resum_small(
        self,
        xs: list[Any],
        spread: list[int],
        mean: list[float],
        m2: list[float],
        r: list[float],
        step: int | None,
    ) -> None:
        """_fix_ill's re-shifted sums for keys ``spread``, on lists (updates mean, m2)."""
        m, n = len(xs), self._size_f
        shifts = [mean[i] if _isfinite(mean[i]) else 0.5 * r[i] + 0.5 * -r[m + i] for i in spread]
        sums_a, sums_b = self._resum(
            np.array(xs, dtype=np.float64), True, np.array(spread), np.array(shifts), step
        )
        lin_mask = self._lin_mask
        for j, (i, a, b) in enumerate(zip(spread, sums_a.tolist(), sums_b.tolist(), strict=True)):
            q = a / n
            mu = shifts[j] + q
            mean[i] = mu
            m2[i] = b - a * q
            # As _fix_ill: keep whichever predictor was closer this time.
            last = self._last_l[i]
            lin_mask[i] = (
                abs(mu - (2.0 * last - self._prev_l[i])) < abs(mu - last) and abs(mu) < _LIN_LIMIT
            )
        self._set_lin(lin_mask)
        self._lin_l = self._lin_f.tolist()

    def _to_lists(self) -> None:
        """The shift state as Python lists: the small-layout step's form."""
        self._shift_l = self._shift.tolist()
        self._last_l = self._last.tolist()
        self._prev_l = self._prev.tolist()
        self._lin_l = self._lin_f.tolist()
        self._in_lists = True

    def _to_arrays(self) -> None:
        """The shift state as arrays again, for the numpy path (after small steps)."""
        if self._in_lists:
            self._shift = np.array(self._shift_l, dtype=np.float64)
            self._last = np.array(self._last_l, dtype=np.float64)
            self._prev = np.array(self._prev_l, dtype=np.float64)
            self._in_lists = False

    def _exchange(
        self, keys: tuple[str, ...], values: np.ndarray, step: int | None
    ) -> tuple[np.ndarray, Any]:
        """Pack this rank's values and run the MAX + SUM pair into the recv buffers."""
        x, finite = self._pack(values, self._positions_of(keys))
        self._pair(step, "MAX+SUM")
        return x, finite

    def _finish_fast(self, x: np.ndarray, step: int | None) -> ReduceResult:
        """Every rank logged every layout key, all finite: ~10 small numpy ops.

        The four statistics are written into one fresh ``[4, m]`` block (rows
        mean, max, min, std), so callers get them as one list with one call.
        """
        m = len(self._layout)
        # Array-array ops only: a Python float operand costs more than an array.
        block = np.empty((4, m))
        mean, xmax, xmin, std = block[0], block[1], block[2], block[3]
        s1, s2, inv = self._s1, self._s2, self._inv_vec
        q = s1 * inv
        np.add(q, self._shift, out=mean)
        t = s1 * q
        # M2 = S2 - t lost too many digits when t > (1 - factor) * S2.
        ill = t > s2 * self._keep_vec
        m2 = np.subtract(s2, t, out=t)
        np.multiply(self._rxx, self._signs2, out=block[1:3])  # rows x, -x -> max, min
        if _count_nonzero(ill):
            std[:] = self._fix_ill(
                ill, x, True, mean, m2, s1.copy(), s2.copy(), self._size_f, xmax, xmin, step
            )
        else:  # m2 >= factor * S2 >= 0 here
            np.multiply(m2, inv, out=m2)
            np.sqrt(m2, out=std)
        # Next step's shift; a key's own mean unless it moves like a counter.
        if self._lin_any:
            # mean + (mean - last) for counter-like keys, without np.errstate: here
            # |mean - last| < 1.4e154 (every d*d was finite) and counter-like keys
            # have |mean| < _LIN_LIMIT, so nothing overflows.
            shift = np.subtract(mean, self._last)
            np.multiply(shift, self._lin_f, out=shift)
            np.add(shift, mean, out=shift)
        else:
            shift = mean
        self._prev = self._last
        self._last = mean
        self._shift = shift
        mean.flags.writeable = False
        return ReduceResult(
            self._layout, {"mean": mean, "max": xmax, "min": xmin, "std": std}, block
        )

    def _finish(self, x: np.ndarray, finite: Any, step: int | None) -> ReduceResult:
        """General case: partial key sets, non-finite values, rank extrema."""
        m = len(self._layout)
        sr, mr, shift = self._sum_recv, self._max_recv, self._shift
        s1, s2 = sr[:m].copy(), sr[m : 2 * m].copy()
        n, nonfinite, nnan = sr[2 * m : 3 * m], sr[3 * m : 4 * m], sr[4 * m :]
        xmax = mr[_H : _H + m].copy()
        xmin = -mr[_H + m :]
        any_nonfinite = bool(nonfinite.any())
        nfin = n - nonfinite if any_nonfinite else n
        present = n > 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = s1 / nfin
            mean = shift + q
            m2 = s2 - s1 * q
            ill = ~(m2 >= s2 * ((nfin + 2.0) * _EPS / _VAR_REL_TOL)) & present
            if any_nonfinite:
                ill &= nonfinite == 0
        if ill.any():
            std = self._fix_ill(ill, x, finite, mean, m2, s1, s2, nfin, xmax, xmin, step)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                std = np.sqrt(m2 / nfin)
        stats = {"mean": mean, "max": xmax, "min": xmin, "std": std}
        if any_nonfinite:
            self._apply_numpy_nonfinite(stats, nonfinite, nnan)
            stats["nonfinite"] = nonfinite.copy()
        self._next_shift(stats["mean"], present)
        stats["mean"].flags.writeable = False
        if (n[present] < self.size).any():
            stats["count"] = n.copy()
        if self._extrema_pos.size:
            stats.update(self._extrema(x, finite, step))
        if present.all():
            return ReduceResult(self._layout, stats)
        keys = self._present_keys(present)
        return ReduceResult(keys, {s: a[present] for s, a in stats.items()})

    def _fix_ill(
        self,
        ill: np.ndarray,
        x: np.ndarray,
        finite: Any,
        mean: np.ndarray,
        m2: np.ndarray,
        s1: np.ndarray,
        s2: np.ndarray,
        nfin: Any,
        xmax: np.ndarray,
        xmin: np.ndarray,
        step: int | None,
    ) -> np.ndarray:
        """Exact results for replicated keys; one re-shifted SUM for the truly ill ones.

        Updates ``mean`` in place and returns std. Every decision here depends
        only on reduced (identical) values, so all ranks take the same branch.
        """
        nfin = np.broadcast_to(nfin, mean.shape)
        same = ill & (xmax == xmin)
        if same.any():  # replicated values (lr, counters): exact, not sum/n
            mean[same] = xmax[same]
            m2[same] = 0.0
        spread = ill & ~same
        if spread.any():
            idx = np.flatnonzero(spread)
            with np.errstate(invalid="ignore", over="ignore"):
                new_shift = np.where(
                    np.isfinite(mean[idx]), mean[idx], 0.5 * xmax[idx] + 0.5 * xmin[idx]
                )
            a, b = self._resum(x, finite, idx, new_shift, step)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                q = a / nfin[idx]
                mean[idx] = new_shift + q
                m2[idx] = b - a * q
            # The prediction missed: from now on use, for these keys, whichever
            # predictor (last mean, or linear extrapolation) was closer this time.
            last, prev = self._last[idx], self._prev[idx]
            with np.errstate(invalid="ignore", over="ignore"):
                lin_err = np.abs(mean[idx] - (2.0 * last - prev))
                self._lin_mask[idx] = (lin_err < np.abs(mean[idx] - last)) & (
                    np.abs(mean[idx]) < _LIN_LIMIT
                )
            self._set_lin(self._lin_mask)
        with np.errstate(divide="ignore", invalid="ignore"):
            std: np.ndarray = np.sqrt(np.maximum(m2, 0.0) / nfin)
        return std

    def _next_shift(self, mean: np.ndarray, present: np.ndarray | None) -> None:
        """Predict next step's mean per key from this step's (agreed) results."""
        if present is not None:
            ok = present & np.isfinite(mean)
            if not ok.all():
                mean = np.where(ok, mean, self._last)
        shift = mean
        if self._lin_any:
            with np.errstate(invalid="ignore", over="ignore"):
                lin = 2.0 * mean - self._last
                big = ~(np.abs(mean) < _LIN_LIMIT) & self._lin_mask
            shift = np.where(self._lin_mask & np.isfinite(lin), lin, mean)
            if big.any():  # see _finish_fast: counter-like keys stay below _LIN_LIMIT
                self._set_lin(self._lin_mask & ~big)
        self._prev = self._last
        self._last = mean
        self._shift = shift

    def _set_lin(self, mask: np.ndarray) -> None:
        self._lin_mask = mask
        self._lin_f = mask.astype(np.float64)
        self._lin_any = bool(mask.any())

    def _present_keys(self, present: np.ndarray) -> tuple[str, ...]:
        mask = present.tobytes()
        keys = self._keys_cache.get(mask)
        if keys is None:
            keys = tuple(k for k, p in zip(self._layout, present.tolist(), strict=True) if p)
            if len(self._keys_cache) >= _POSITION_CACHE:
                self._keys_cache.clear()
            self._keys_cache[mask] = keys
        return keys

    @staticmethod
    def _apply_numpy_nonfinite(stats: dict[str, np.ndarray], nonfinite: Any, nnan: Any) -> None:
        """Make mean/max/min/std what numpy gives over values with NaN/±inf."""
        has_nan = nnan > 0
        pos_inf = stats["max"] == np.inf
        neg_inf = stats["min"] == -np.inf
        mean = stats["mean"]
        mean = np.where(pos_inf, np.inf, mean)
        mean = np.where(neg_inf, -np.inf, mean)
        mean = np.where(has_nan | (pos_inf & neg_inf), np.nan, mean)
        stats["mean"] = mean
        stats["std"] = np.where(nonfinite > 0, np.nan, stats["std"])
        stats["max"] = np.where(has_nan, np.nan, stats["max"])
        stats["min"] = np.where(has_nan, np.nan, stats["min"])

    def _resum(
        self, x: np.ndarray, finite: Any, idx: np.ndarray, shift: np.ndarray, step: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Σd and Σd² for keys ``idx`` with a better shift (one extra SUM)."""
        from mpi4py import MPI

        k = idx.size
        send = np.zeros(2 * k)
        if x.size:
            xs = x[idx]
            with np.errstate(invalid="ignore", over="ignore"):
                d = xs - shift
                if finite is not True:
                    d = np.where(finite[idx], d, 0.0)
            send[:k] = d
            send[k:] = d * d
        recv = np.empty(2 * k)
        self.topology.allreduce(send, recv, MPI.SUM, step=step, what="SUM (re-shifted)")
        return recv[:k], recv[k:]

    def _extrema(self, x: np.ndarray, finite: Any, step: int | None) -> dict[str, Any]:
        """Ranks holding the max and min of the opted-in keys (one MAXLOC)."""
        from mpi4py import MPI

        pos = self._extrema_pos
        k = pos.size
        pair = np.dtype([("v", np.float64), ("i", np.intc)], align=True)
        send = np.zeros(2 * k, dtype=pair)
        # Absent and NaN entries lose every tie to a real value: index >= size.
        send["v"] = -np.inf
        send["i"] = self.size + self.rank
        if x.size:
            xs = x[pos]
            usable = ~np.isnan(xs) if finite is True else (~np.isnan(xs) & self._logged(pos))
            send["v"][:k] = np.where(usable, xs, -np.inf)
            send["v"][k:] = np.where(usable, -xs, -np.inf)
            send["i"] = np.where(np.concatenate([usable, usable]), self.rank, self.size + self.rank)
        recv = np.empty(2 * k, dtype=pair)
        self.topology.allreduce(
            [send, MPI.DOUBLE_INT], [recv, MPI.DOUBLE_INT], MPI.MAXLOC, step=step, what="MAXLOC"
        )
        m = len(self._layout)
        max_rank, min_rank = np.full(m, np.nan), np.full(m, np.nan)
        ranks = recv["i"].astype(np.float64)
        ranks[ranks >= self.size] = np.nan
        max_rank[pos], min_rank[pos] = ranks[:k], ranks[k:]
        return {"max_rank": max_rank, "min_rank": min_rank}

    def _logged(self, pos: np.ndarray) -> np.ndarray:
        m = len(self._layout)
        logged: np.ndarray = self._sum_send[2 * m : 3 * m][pos] > 0
        return logged

    # -- slow path ---------------------------------------------------------------

    def _agree_layout(self, keys: tuple[str, ...], step: int | None) -> None:
        """Exchange key lists and adopt the union as the new layout (collective)."""
        payload = json.dumps(keys).encode()
        every = self.topology.allgather_bytes(payload, step=step, what="key exchange")
        union = dict.fromkeys(self._layout)
        current: dict[str, None] = {}
        for raw in every:
            for key in json.loads(raw):
                union[key] = None
                current[key] = None
        layout = tuple(union) if len(union) <= _MAX_LAYOUT else tuple(current)
        old = dict(zip(self._layout, self._last.tolist(), strict=True))
        if self.rank == 0:
            log.debug("step %s: ranks logged different keys; layout now %d keys", step, len(layout))
        self._set_layout(layout, old)

    def make_interruptible(self) -> None:
        """Poll collectives instead of blocking inside MPI (no deadline).

        A rank blocked in ``MPI_Allreduce`` cannot run a Python signal handler
        until the other ranks arrive; with handlers installed
        (ezpz.history.signals) every rank must be able to save its values on
        SIGTERM, so History calls this. Balanced ranks finish within the
        first microseconds of testing (persistent requests stay persistent);
        a rank waiting longer sleeps at most 0.2 ms between polls.
        """
        if self.timeout is not None:
            return  # polled already (EZPZ_COLLECTIVE_TIMEOUT)
        self.timeout = math.inf
        topology = self.topology
        topology.timeout = math.inf
        # Drop the blocking fast paths Topology bound for "no timeout".
        topology.__dict__.pop("allreduce", None)
        topology.__dict__.pop("allreduce_pair", None)
        self._make_pair()  # a fallback runner bound the blocking pair

    def close(self) -> None:
        """Free the requests and communicators the reducer created (not ``comm``)."""
        if self._pair is not None:
            self.topology.free_pair(self._pair)
            self._pair = None
        self.topology.free()
