"""Device memory probes: four GiB numbers per step on CUDA (incl. ROCm) and XPU.

``get_memory_metrics`` reads the caching allocator's counters, which live on
the host: no device synchronisation, so it is cheap enough to call every
step. The device total is queried once per device and cached; the console
summary reads it through ``last_device_total_gib()`` without importing torch.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

GIB = float(1024**3)
MEMORY_KEYS = ("mem_alloc", "mem_peak_alloc", "mem_reserved", "mem_peak_reserved")

# allocator statistic behind each key (torch.{cuda,xpu}.memory_stats names)
_STAT_FOR_KEY = {
    "mem_alloc": "allocated_bytes.all.current",
    "mem_peak_alloc": "allocated_bytes.all.peak",
    "mem_reserved": "reserved_bytes.all.current",
    "mem_peak_reserved": "reserved_bytes.all.peak",
}
_FALSE_STRINGS = {"0", "false", "no", "off"}

_total_bytes: dict[tuple[str, int], int] = {}
_last_total_gib: float | None = None
_warned_failures: set[tuple[str, int]] = set()


def memory_tracking_enabled() -> bool:
    """False when ``EZPZ_TRACK_MEMORY`` is 0/false/no/off."""
    return os.environ.get("EZPZ_TRACK_MEMORY", "1").strip().lower() not in _FALSE_STRINGS


def last_device_total_gib() -> float | None:
    """Total memory (GiB) of the device last probed, or None before any probe.

    Never imports torch: the console summary calls it to turn the peak
    allocation into a percentage.
    """
    return _last_total_gib


def _parse_device(device: Any) -> tuple[str, int | None]:
    """``(kind, index)`` from a torch.device, a string like "cuda:1", an int or None."""
    if device is None:
        return "cpu", None
    if isinstance(device, int):
        return "cuda", device
    kind = getattr(device, "type", None)
    if kind is not None:  # torch.device
        return str(kind), getattr(device, "index", None)
    text = str(device).strip().lower()
    kind, _, index = text.partition(":")
    return kind, int(index) if index.isdigit() else None


def _accelerator_module(kind: str) -> Any | None:
    """``torch.cuda`` or ``torch.xpu`` when that accelerator is usable, else None."""
    if kind not in ("cuda", "xpu"):
        return None
    try:
        import torch
    except ImportError:
        return None
    module = getattr(torch, kind, None)
    if module is None or not module.is_available():
        return None
    return module


def _read_stats(module: Any, index: int) -> dict[str, float]:
    """The four allocator numbers in bytes, read in one call when possible."""
    stats_fn = getattr(module, "memory_stats", None)
    if stats_fn is not None:
        stats = stats_fn(index)
        if stats:
            return {key: float(stats.get(stat, 0)) for key, stat in _STAT_FOR_KEY.items()}
    # Older XPU builds, or an allocator that exposes no stats dict.
    return {
        "mem_alloc": float(module.memory_allocated(index)),
        "mem_peak_alloc": float(module.max_memory_allocated(index)),
        "mem_reserved": float(module.memory_reserved(index)),
        "mem_peak_reserved": float(module.max_memory_reserved(index)),
    }


def _device_total_bytes(module: Any, kind: str, index: int) -> int:
    cached = _total_bytes.get((kind, index))
    if cached is None:
        cached = int(module.get_device_properties(index).total_memory)
        _total_bytes[(kind, index)] = cached
    return cached


def get_memory_metrics(device: Any, prefix: str = "") -> dict[str, float]:
    """Allocated / peak allocated / reserved / peak reserved memory in GiB.

    Keys are ``{prefix}mem_alloc``, ``{prefix}mem_peak_alloc``,
    ``{prefix}mem_reserved`` and ``{prefix}mem_peak_reserved``. Peaks are
    since the start of the process or the caller's last
    ``torch.cuda.reset_peak_memory_stats()``. Returns ``{}`` on CPU and MPS,
    when the accelerator is not usable, and when ``EZPZ_TRACK_MEMORY=0``.
    """
    global _last_total_gib
    if not memory_tracking_enabled():
        return {}
    kind, index = _parse_device(device)
    if kind not in ("cuda", "xpu"):
        return {}
    module = _accelerator_module(kind)
    if module is None:
        return {}
    if index is None:
        index = int(module.current_device())
    try:
        raw = _read_stats(module, index)
        _last_total_gib = _device_total_bytes(module, kind, index) / GIB
    except Exception as exc:  # a probe must never stop training
        if (kind, index) not in _warned_failures:
            _warned_failures.add((kind, index))
            logger.warning("memory probe on %s:%d failed, no memory keys: %s", kind, index, exc)
        return {}
    return {f"{prefix}{key}": raw[key] / GIB for key in MEMORY_KEYS}
