"""One pass over a user's metrics dict: flatten, classify, convert.

Rules (spec §3): Python/numpy bool, int and float, 0-d arrays and
one-element tensors are scalars; 1-d arrays, tensors, lists and tuples of
numbers are vector metrics; nested dicts flatten to ``a/b`` keys; anything
else (None, strings, objects) is skipped with one warning per key. Torch
tensors are converted together: one device-to-host copy per device per call,
and no reference to the caller's tensors is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_PLAIN_SCALARS = (float, int)
_FAST_VALUE_TYPES = frozenset((float, int))
_FLOAT_TYPE = frozenset((float,))
_STR_TYPE = frozenset((str,))


class Normalized:
    """Scalars as parallel lists (hot path), vectors as (key, float64 array)."""

    __slots__ = ("scalar_keys", "scalar_values", "vectors", "flat_input")

    def __init__(self) -> None:
        # True when the input was a flat str -> float/int dict taken as it is.
        self.flat_input = False
        self.scalar_keys: list[str] = []
        self.scalar_values: list[float] = []
        self.vectors: list[tuple[str, np.ndarray]] = []


def _drop_repeats(out: Normalized) -> None:
    """Keep the last value of a key logged twice (flat "a/b" and nested)."""
    if len(set(out.scalar_keys)) != len(out.scalar_keys):
        last = dict(zip(out.scalar_keys, out.scalar_values, strict=True))
        out.scalar_keys, out.scalar_values = list(last), list(last.values())
    if len({k for k, _ in out.vectors}) != len(out.vectors):
        out.vectors = list(dict(out.vectors).items())


class Normalizer:
    """Holds the once-per-key warning memory across calls."""

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._nested = False
        self._str_keys: set[tuple[str, ...]] = set()

    def _all_str(self, keys: list[Any]) -> bool:
        if set(map(type, keys)) <= _STR_TYPE:
            if len(self._str_keys) < 1024:  # bounded: key sets are few in practice
                self._str_keys.add(tuple(keys))
            return True
        return False

    def __call__(self, metrics: Mapping[str, Any]) -> Normalized:
        out = Normalized()
        # Fast path: a flat dict of str -> float/int, the common training-loop case.
        values = list(metrics.values())
        vtypes = set(map(type, values))
        if vtypes <= _FAST_VALUE_TYPES:
            keys = list(metrics)
            # A key tuple seen before has already been checked to be all str.
            if tuple(keys) in self._str_keys or self._all_str(keys):
                try:
                    out.scalar_values = (
                        values if vtypes <= _FLOAT_TYPE else list(map(float, values))
                    )
                    out.scalar_keys = keys
                    out.flat_input = True
                    return out
                except OverflowError:  # an int beyond float64: the careful path skips it
                    pass
        tensors: list[tuple[str, Any]] = []
        self._nested = False
        self._walk(metrics, "", out, tensors)
        if tensors:
            self._convert_tensors(tensors, out)
        if self._nested:
            _drop_repeats(out)
        return out

    def _skip(self, key: str, value: Any, why: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("ezpz: skipping metric %r (%s: %s)", key, type(value).__name__, why)

    def _walk(
        self, metrics: Mapping[str, Any], prefix: str, out: Normalized, tensors: list
    ) -> None:
        keys, values = out.scalar_keys, out.scalar_values
        for raw_key, v in metrics.items():
            key = (
                f"{prefix}{raw_key}"
                if prefix
                else (raw_key if type(raw_key) is str else str(raw_key))
            )
            t = type(v)
            if t is float or t is int:  # the common case first
                try:
                    values.append(float(v))
                    keys.append(key)
                except OverflowError:
                    self._skip(key, v, "integer too large for float64")
            elif t is bool:
                keys.append(key)
                values.append(1.0 if v else 0.0)
            elif isinstance(v, Mapping):
                self._nested = True  # {"a": {"b": 1}} may repeat a flat "a/b"
                self._walk(v, f"{key}/", out, tensors)
            elif isinstance(v, np.ndarray | np.generic):
                self._add_array(key, v, out)
            elif t.__module__.startswith("torch") and hasattr(v, "detach"):
                tensors.append((key, v))
            elif isinstance(v, _PLAIN_SCALARS):  # subclasses of int/float
                keys.append(key)
                values.append(float(v))
            elif isinstance(v, list | tuple):
                self._add_sequence(key, v, out)
            elif v is None:
                self._skip(key, v, "None")
            else:
                self._skip(key, v, "not a number, array or tensor")

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

    def _add_sequence(self, key: str, v: list | tuple, out: Normalized) -> None:
        try:
            arr = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
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
