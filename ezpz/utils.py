"""Compatibility home of the console-summary formatter.

The formatter lives in :mod:`ezpz.history.summary`; this module re-exports its
public names so that ``from ezpz.utils import format_compact_summary`` keeps
working. The memory helpers of :mod:`ezpz.memory` and ``grab_tensor`` are
re-exported here too, where ezpz 0.26 had them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ezpz.history.summary import (
    COUNTER_KEYS,
    HYPERPARAMETER_KEYS,
    MEMORY_KEYS,
    SummaryFormatter,
    format_compact_summary,
    format_std,
    format_value,
)

if TYPE_CHECKING:  # pragma: no cover
    from ezpz.history.compat import grab_tensor
    from ezpz.memory import (
        format_memory_summary,
        get_current_memory_allocated,
        get_current_memory_reserved,
        get_max_memory_allocated,
        get_max_memory_reserved,
        get_memory_metrics,
        reset_peak_memory_stats,
    )

# Resolved on first use: importing ezpz.memory here would make the console
# summary believe a device had been probed (it reads ezpz.memory's cache).
_LAZY = {
    "grab_tensor": "ezpz.history.compat",
    "format_memory_summary": "ezpz.memory",
    "get_current_memory_allocated": "ezpz.memory",
    "get_current_memory_reserved": "ezpz.memory",
    "get_max_memory_allocated": "ezpz.memory",
    "get_max_memory_reserved": "ezpz.memory",
    "get_memory_metrics": "ezpz.memory",
    "reset_peak_memory_stats": "ezpz.memory",
}

__all__ = [
    "COUNTER_KEYS",
    "HYPERPARAMETER_KEYS",
    "MEMORY_KEYS",
    "SummaryFormatter",
    "format_compact_summary",
    "format_std",
    "format_memory_summary",
    "format_value",
    "get_current_memory_allocated",
    "get_current_memory_reserved",
    "get_max_memory_allocated",
    "get_max_memory_reserved",
    "get_memory_metrics",
    "grab_tensor",
    "reset_peak_memory_stats",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ezpz.utils' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
