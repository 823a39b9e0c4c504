"""Device memory probes: four GiB numbers per step on CUDA (incl. ROCm) and XPU.

``get_memory_metrics`` reads the caching allocator's counters, which live on
the host: no device synchronisation, so it is cheap enough to call every
step. The device total is queried once per device and cached; the console
summary reads it through ``last_device_total_gib()`` without importing torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ezpz._env import env_flag

__all__ = [
    "MEMORY_KEYS",
    "format_memory_summary",
    "get_current_memory_allocated",
    "get_current_memory_reserved",
    "get_max_memory_allocated",
    "get_max_memory_reserved",
    "get_memory_metrics",
    "last_device_total_gib",
    "memory_tracking_enabled",
    "reset_peak_memory_stats",
]

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

_total_bytes: dict[tuple[str, int], int] = {}
_last_total_gib: float | None = None
_warned_failures: set[tuple[str, int]] = set()


def memory_tracking_enabled() -> bool:
    """False when ``EZPZ_TRACK_MEMORY`` is 0/false/no/off."""
    return env_flag("EZPZ_TRACK_MEMORY", True)


def last_device_total_gib() -> float | None:
    """Total memory (GiB) of the device last probed, or None before any probe.

    Never imports torch: the console summary calls it to turn the peak
    allocation into a percentage.
    """
    return _last_total_gib


def _parse_device(device: Any) -> tuple[str, int | None]:
    """``(kind, index)`` from a torch.device, a string like "cuda:1", an int or None.

    ``None`` means the current torch device (torch is imported for that); a
    bare int means that index on the accelerator torch has (CUDA before XPU).
    """
    if device is None:
        return _current_kind(), None
    if isinstance(device, bool):
        raise TypeError(f"device must be a torch.device, a string or an int, got {device!r}")
    if isinstance(device, int):
        kind = _current_kind()
        return ("cuda" if kind not in ("cuda", "xpu") else kind), device
    device_type = getattr(device, "type", None)
    if device_type is not None:  # torch.device
        return str(device_type), getattr(device, "index", None)
    text = str(device).strip().lower()
    kind, _, index = text.partition(":")
    return kind, int(index) if index.isdigit() else None


def _current_kind() -> str:
    """``"cuda"``, ``"xpu"``, ``"mps"`` or ``"cpu"``: the accelerator torch can use here."""
    try:
        from ezpz.dist import _accelerator_kind

        return _accelerator_kind()
    except Exception:  # no torch, or a broken accelerator runtime: no device memory
        return "cpu"


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


def get_memory_metrics(
    device: Any = None, prefix: str = "", reset_peak: bool = True
) -> dict[str, float]:
    """Allocated / peak allocated / reserved / peak reserved memory in GiB.

    Keys are ``{prefix}mem_alloc``, ``{prefix}mem_peak_alloc``,
    ``{prefix}mem_reserved`` and ``{prefix}mem_peak_reserved``. ``device``:
    a torch.device, ``"cuda:1"``, an index, or ``None`` for the current torch
    device. Returns ``{}`` on CPU and MPS, when the accelerator is not
    usable, and when ``EZPZ_TRACK_MEMORY=0``.

    ``reset_peak=True`` (the default, as in ezpz 0.26) resets the allocator's
    peak counters after reading, so each call's peaks are the peaks since the
    previous call: called once per step, ``mem_peak_alloc`` is that step's
    high-water mark. ``reset_peak=False`` leaves the counters alone: peaks are
    then cumulative since the process started (or since your own
    ``torch.cuda.reset_peak_memory_stats()``). The reset is cheap (host-side
    counters) and never raises.
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
    try:
        if index is None:
            index = int(module.current_device())
        raw = _read_stats(module, index)
        _last_total_gib = _device_total_bytes(module, kind, index) / GIB
    except Exception as exc:  # a probe must never stop training
        key = (kind, -1 if index is None else index)
        if key not in _warned_failures:
            _warned_failures.add(key)
            logger.warning("memory probe on %s:%s failed, no memory keys: %s", kind, index, exc)
        return {}
    if reset_peak:
        _reset_peak(module, index)
    return {f"{prefix}{key}": raw[key] / GIB for key in MEMORY_KEYS}


# -- single-number helpers (ezpz 0.26 names); bytes, 0.0 where there is no device memory --
def _module_and_index(device: Any) -> tuple[Any | None, int | None]:
    try:
        kind, index = _parse_device(device)
    except Exception:
        return None, None
    module = _accelerator_module(kind)
    if module is None:
        return None, None
    return module, index


def _counter(device: Any, name: str) -> float:
    """``torch.<kind>.<name>(index)`` in bytes; 0.0 on CPU/MPS and on any error."""
    module, index = _module_and_index(device)
    if module is None:
        return 0.0
    try:
        fn = getattr(module, name)
        return float(fn(index) if index is not None else fn())
    except Exception:  # older XPU builds lack some counters; never raise from a probe
        return 0.0


def get_current_memory_allocated(device: Any = None) -> float:
    """Bytes currently allocated on ``device`` (None: current device); 0.0 on CPU/MPS."""
    return _counter(device, "memory_allocated")


def get_current_memory_reserved(device: Any = None) -> float:
    """Bytes currently reserved by the caching allocator; 0.0 on CPU/MPS."""
    return _counter(device, "memory_reserved")


def get_max_memory_allocated(device: Any = None) -> float:
    """Peak bytes allocated since the last reset; 0.0 on CPU/MPS."""
    return _counter(device, "max_memory_allocated")


def get_max_memory_reserved(device: Any = None) -> float:
    """Peak bytes reserved since the last reset; 0.0 on CPU/MPS."""
    return _counter(device, "max_memory_reserved")


def _reset_peak(module: Any, index: int | None) -> None:
    reset = getattr(module, "reset_peak_memory_stats", None)
    if reset is None:
        return
    try:
        reset(index) if index is not None else reset()
    except Exception as exc:  # e.g. an XPU build without the call: peaks stay cumulative
        logger.debug("reset_peak_memory_stats failed: %s", exc)


def reset_peak_memory_stats(device: Any = None) -> None:
    """Reset the allocator's peak counters on ``device``; a no-op on CPU/MPS, never raises."""
    module, index = _module_and_index(device)
    if module is not None:
        _reset_peak(module, index)


def format_memory_summary(
    metrics: Mapping[str, Any], *, device: Any = None, prefix: str | None = None
) -> str:
    """The console's memory token for ``metrics``: ``"1.20/2.00GiB (15%)"``.

    Alloc/reserved in GiB and the peak allocation as a percentage of the
    device total (left out when the total is not known yet), exactly as the
    ``memory=`` token of the console line. ``prefix`` (e.g. ``"train/"``) is
    inferred from the keys when None. Returns ``""`` when ``metrics`` has no
    memory keys (CPU/MPS). ``device`` is accepted for ezpz 0.26 compatibility;
    the total comes from the last probed device.
    """
    del device  # the total of the device get_memory_metrics last probed is used
    from ezpz.history.summary import _format_memory

    if prefix is None:
        prefix = ""
        for key in metrics:
            for name in ("mem_peak_alloc", "mem_alloc", "mem_reserved", "mem_peak_reserved"):
                if key.endswith(name):
                    prefix = key[: -len(name)]
                    break
            else:
                continue
            break

    def value(name: str) -> float | None:
        v = metrics.get(f"{prefix}{name}")
        try:
            return None if v is None else float(v)
        except (TypeError, ValueError):
            return None

    alloc, reserved, peak = value("mem_alloc"), value("mem_reserved"), value("mem_peak_alloc")
    if alloc is None and reserved is None and peak is None:
        return ""
    return _format_memory(alloc, reserved, peak, last_device_total_gib())
