"""One pass over a user's metrics dict: flatten, classify, convert.

Rules (docs/history.md, "Value rules"): Python/numpy bool, int and float, 0-d arrays and
one-element tensors are scalars; 1-d arrays, tensors, lists and tuples of
numbers are vector metrics; nested dicts flatten to ``a/b`` keys; anything
else (None, strings, objects) is skipped with one warning per key. Torch
tensors are converted together: one device-to-host copy per device per call,
and no reference to the caller's tensors is kept.

Keys are validated here, once, so that every output can hold them and every
rank decides the same way (docs/history.md, "Keys"):

* the JSONL's own fields (``_step``, ``_time``, ``_event``:
  :data:`ezpz.history.keys.RESERVED_KEYS`) are skipped, one warning per key;
* a NUL character or a lone surrogate (``os.fsdecode()`` of a non-UTF-8 file
  name) is replaced by U+FFFD, one warning per key: ``"a\\x00b"`` is recorded
  as ``"a\\ufffdb"``;
* nested dicts deeper than :data:`MAX_DEPTH` levels, and a dict that contains
  itself, are skipped (that branch only) with one warning.

Integers of any size are recorded as float64 (an integer beyond float64's
range is ±inf, with one warning), on any number of ranks.
"""

from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ezpz.history.keys import RESERVED_KEYS

logger = logging.getLogger(__name__)

#: Nesting levels of metric dicts that update() flattens; deeper branches are skipped.
MAX_DEPTH = 32
#: The step range update() accepts (int64): steps are exact everywhere.
STEP_MIN, STEP_MAX = -(2**63), 2**63 - 1
# An int at or beyond this magnitude may not fit the JSONL's 64-bit integers.
_BIG_INT = float(2**63)
_SURROGATE = re.compile("[\ud800-\udfff]")
_REPLACEMENT = "\ufffd"

_PLAIN_SCALARS = (float, int)
_FAST_VALUE_TYPES = frozenset((float, int))
_FLOAT_TYPE = frozenset((float,))
_STR_TYPE = frozenset((str,))


class Normalized:
    """Scalars as parallel lists (hot path), vectors as (key, float64 array)."""

    __slots__ = ("scalar_keys", "scalar_values", "vectors", "flat_input", "key_tuple")

    def __init__(self) -> None:
        # True when the input was a flat str -> float/int dict taken as it is.
        self.flat_input = False
        self.scalar_keys: list[str] = []
        # The fast path's keys as one tuple, the same object for the same key set
        # on every call (History's layout caches compare it by identity).
        self.key_tuple: tuple[str, ...] | None = None
        self.scalar_values: list[float] = []
        self.vectors: list[tuple[str, np.ndarray]] = []


def _drop_repeats(out: Normalized) -> None:
    """Keep the last value of a key logged twice (flat "a/b" and nested)."""
    if len(set(out.scalar_keys)) != len(out.scalar_keys):
        last = dict(zip(out.scalar_keys, out.scalar_values, strict=True))
        out.scalar_keys, out.scalar_values = list(last), list(last.values())
    if len({k for k, _ in out.vectors}) != len(out.vectors):
        out.vectors = list(dict(out.vectors).items())


def _needs_repair(key: str) -> bool:
    return (
        key in RESERVED_KEYS
        or "\x00" in key
        or (not key.isascii() and _SURROGATE.search(key) is not None)
    )


def repair_key(key: str) -> tuple[str | None, str]:
    """``(key to record, why)``; ``None`` means skip. ``why`` is empty for a good key.

    The one key rule of ezpz (docs/history.md, "Keys"): reserved JSONL fields are skipped; NUL
    and lone surrogates, which HDF5 and UTF-8 outputs cannot hold, become U+FFFD.
    Deterministic, so every rank makes the same decision for the same key.
    """
    if key in RESERVED_KEYS:
        return None, "reserved: the JSONL uses this field itself"
    fixed = key.replace("\x00", _REPLACEMENT) if "\x00" in key else key
    if not fixed.isascii():
        fixed = _SURROGATE.sub(_REPLACEMENT, fixed)
    if fixed == key:
        return key, ""
    return fixed, "NUL or lone surrogate replaced by U+FFFD"


def as_step(step: Any) -> int:
    """``step`` as an exact int64 step; an error for anything else.

    numpy ints, and floats or tensors holding a whole number, are accepted; a
    step outside int64 is a ``ValueError`` (it could not be stored exactly).
    """
    try:
        value_int = operator.index(step)
    except TypeError:
        try:
            value = math.nan if isinstance(step, str | bytes) else float(step)
        except (TypeError, ValueError):
            value = math.nan
        if not value.is_integer():
            raise TypeError(f"step must be an integer, got {step!r}") from None
        value_int = int(value)
    if not STEP_MIN <= value_int <= STEP_MAX:
        raise ValueError(
            f"step {step!r} is outside int64 [-2**63, 2**63 - 1]; steps are stored exactly "
            "as int64 and cannot hold it"
        )
    return value_int


def _int_as_float(v: int) -> float:
    """An int as float64; beyond float64's range, ±inf (IEEE overflow)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


class Normalizer:
    """Holds the once-per-key warning memory across calls."""

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._nested = False
        # Checked key tuples, each mapped to itself: the canonical object.
        self._str_keys: dict[tuple[str, ...], tuple[str, ...]] = {}
        # Full key -> the key to record (None: skip), for keys seen before.
        self._keys: dict[str, str | None] = {}

    def _all_str(self, keys: tuple[Any, ...]) -> tuple[str, ...] | None:
        """``keys`` when all are str and valid as they are (checked once per key set)."""
        if set(map(type, keys)) <= _STR_TYPE:
            if any(map(_needs_repair, keys)):
                return None
            if len(self._str_keys) < 1024:  # bounded: key sets are few in practice
                self._str_keys[keys] = keys
            return keys
        return None

    def _key(self, key: str) -> str | None:
        """The key to record for ``key`` (None: skip), warning once per key."""
        if key in self._keys:
            fixed = self._keys[key]
        else:
            fixed, why = repair_key(key)
            if why and key not in self._warned:
                self._warned.add(key)
                if fixed is None:
                    logger.warning("ezpz: skipping metric %r (%s)", key, why)
                else:
                    logger.warning("ezpz: metric %r recorded as %r (%s)", key, fixed, why)
            if len(self._keys) < 100_000:  # bounded: keys are few in practice
                self._keys[key] = fixed
        if fixed != key:
            self._nested = True  # a repaired key may repeat another: drop repeats
        return fixed

    def __call__(self, metrics: Mapping[str, Any]) -> Normalized:
        out = Normalized()
        # Fast path: a flat dict of str -> float/int, the common training-loop case.
        values = list(metrics.values())
        vtypes = set(map(type, values))
        if vtypes <= _FAST_VALUE_TYPES:
            keys = list(metrics)
            # A key tuple seen before has already been checked to be all str.
            seen = tuple(keys)
            key_tuple = self._str_keys.get(seen) or self._all_str(seen)
            if key_tuple is not None:
                out.key_tuple = key_tuple
                if vtypes <= _FLOAT_TYPE:
                    out.scalar_values = values
                    out.scalar_keys = keys
                    out.flat_input = True
                    return out
                try:
                    floats = list(map(float, values))
                except OverflowError:  # an int beyond float64: the careful path says so
                    pass
                else:
                    out.scalar_values = floats
                    out.scalar_keys = keys
                    # The caller's dict can stand for the record only when every
                    # int fits the JSONL's 64-bit integers; else the floats do.
                    out.flat_input = not floats or max(map(abs, floats)) < _BIG_INT
                    return out
        tensors: list[tuple[str, Any]] = []
        self._nested = False
        self._walk(metrics, "", out, tensors, 0, [])
        if tensors:
            self._convert_tensors(tensors, out)
        if self._nested:
            _drop_repeats(out)
        return out

    def _skip(self, key: str, value: Any, why: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("ezpz: skipping metric %r (%s: %s)", key, type(value).__name__, why)

    def _big_int(self, key: str, v: int) -> float:
        value = _int_as_float(v)
        if math.isinf(value) and key not in self._warned:
            self._warned.add(key)
            logger.warning(
                "ezpz: metric %r is an integer beyond float64; recorded as %s", key, value
            )
        return value

    def _walk(
        self,
        metrics: Mapping[str, Any],
        prefix: str,
        out: Normalized,
        tensors: list[tuple[str, Any]],
        depth: int,
        path: list[int],
    ) -> None:
        keys, values = out.scalar_keys, out.scalar_values
        path.append(id(metrics))
        for raw_key, v in metrics.items():
            full = (
                f"{prefix}{raw_key}"
                if prefix
                else (raw_key if type(raw_key) is str else str(raw_key))
            )
            if full in RESERVED_KEYS and isinstance(v, Mapping):
                key = full  # "_step/x" is no JSONL field: only leaves are reserved
            else:
                fixed = self._key(full)
                if fixed is None:
                    continue
                key = fixed
            t = type(v)
            if t is float or t is int:  # the common case first
                try:
                    values.append(float(v))
                except OverflowError:
                    values.append(self._big_int(key, v))
                keys.append(key)
            elif t is bool:
                keys.append(key)
                values.append(1.0 if v else 0.0)
            elif isinstance(v, Mapping):
                self._nested = True  # {"a": {"b": 1}} may repeat a flat "a/b"
                if id(v) in path:
                    self._skip(key, v, "a dict that contains itself; branch skipped")
                elif depth + 1 >= MAX_DEPTH:
                    self._skip(key, v, f"nested deeper than {MAX_DEPTH} levels; branch skipped")
                else:
                    self._walk(v, f"{key}/", out, tensors, depth + 1, path)
            elif isinstance(v, np.ndarray | np.generic):
                self._add_array(key, v, out)
            elif t.__module__.startswith("torch") and hasattr(v, "detach"):
                tensors.append((key, v))
            elif isinstance(v, _PLAIN_SCALARS):  # subclasses of int/float
                keys.append(key)
                values.append(self._big_int(key, v) if isinstance(v, int) else float(v))
            elif isinstance(v, list | tuple):
                self._add_sequence(key, v, out)
            elif v is None:
                self._skip(key, v, "None")
            else:
                self._skip(key, v, "not a number, array or tensor")
        path.pop()

    def _add_array(self, key: str, v: Any, out: Normalized) -> None:
        if v.dtype.kind not in "biuf":  # bool, int, uint, float
            self._skip(key, v, f"dtype {v.dtype}")
            return
        if v.size == 1:  # numpy scalars, 0-d and one-element arrays
            out.scalar_keys.append(key)
            out.scalar_values.append(float(v.item()))
            return
        if v.size == 0:
            self._skip(key, v, "empty array")
            return
        if v.ndim > 1 and key not in self._warned:
            self._warned.add(key)
            logger.warning("ezpz: metric %r has shape %s; stored flattened", key, v.shape)
        out.vectors.append((key, np.array(v, dtype=np.float64).reshape(-1)))

    def _add_sequence(self, key: str, v: list[Any] | tuple[Any, ...], out: Normalized) -> None:
        try:
            arr = np.asarray(v, dtype=np.float64)
        except OverflowError:  # an int beyond float64 in a flat list: ±inf
            try:
                arr = np.asarray(
                    [self._big_int(key, x) if type(x) is int else x for x in v], dtype=np.float64
                )
            except (TypeError, ValueError, OverflowError, RecursionError):
                self._skip(key, v, "sequence of non-numbers")
                return
        except (TypeError, ValueError, RecursionError):
            self._skip(key, v, "sequence of non-numbers")
            return
        if arr.size == 0:
            self._skip(key, v, "empty sequence")
            return
        out.vectors.append((key, arr.reshape(-1)))

    def _convert_tensors(self, tensors: list[tuple[str, Any]], out: Normalized) -> None:
        """One device-to-host copy per device for all tensors of this call."""
        import torch  # already imported by the caller: it handed us tensors

        by_device: dict[Any, list[tuple[str, Any]]] = {}
        for key, t in tensors:
            if t.is_complex() or t.numel() == 0:
                self._skip(key, t, "complex or empty tensor")
                continue
            by_device.setdefault(t.device, []).append((key, t))
        for device, items in by_device.items():
            # MPS has no float64; elsewhere float64 keeps integer counters exact.
            dtype = torch.float32 if device.type == "mps" else torch.float64
            with torch.no_grad():
                flat = torch.cat([t.detach().reshape(-1).to(dtype) for _, t in items])
                host = flat.cpu().numpy().astype(np.float64, copy=False)
            offset = 0
            for key, t in items:
                n = t.numel()
                if n == 1:  # 0-d and one-element tensors are scalars
                    out.scalar_keys.append(key)
                    out.scalar_values.append(float(host[offset]))
                else:
                    out.vectors.append((key, host[offset : offset + n].copy()))
                offset += n
