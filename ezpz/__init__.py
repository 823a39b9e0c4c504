"""ezpz: MPI-native experiment tracking for HPC training jobs.

Public names are resolved lazily so that ``import ezpz`` stays cheap: no
torch, matplotlib, xarray, h5py, wandb, mlflow or even mpi4py is imported
until something that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ezpz._version import __version__

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "History": "ezpz.history",
    "StopWatch": "ezpz.history",
    "get_rank": "ezpz.dist",
    "get_world_size": "ezpz.dist",
    "get_local_rank": "ezpz.dist",
    "setup_torch": "ezpz.torch_setup",
    "get_torch_device": "ezpz.torch_setup",
    "cleanup": "ezpz.torch_setup",
    "get_memory_metrics": "ezpz.memory",
    "format_memory_summary": "ezpz.memory",
    "get_current_memory_allocated": "ezpz.memory",
    "get_current_memory_reserved": "ezpz.memory",
    "get_max_memory_allocated": "ezpz.memory",
    "get_max_memory_reserved": "ezpz.memory",
    "reset_peak_memory_stats": "ezpz.memory",
    "setup_wandb": "ezpz.tracker",
    "setup_mlflow": "ezpz.tracker",
    "format_compact_summary": "ezpz.history.summary",
}

__all__ = [
    "History",
    "StopWatch",
    "__version__",
    "cleanup",
    "format_compact_summary",
    "format_memory_summary",
    "get_current_memory_allocated",
    "get_current_memory_reserved",
    "get_max_memory_allocated",
    "get_max_memory_reserved",
    "get_local_rank",
    "get_memory_metrics",
    "get_rank",
    "get_torch_device",
    "get_world_size",
    "reset_peak_memory_stats",
    "setup_mlflow",
    "setup_torch",
    "setup_wandb",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ezpz.dist import get_local_rank, get_rank, get_world_size
    from ezpz.history import History, StopWatch
    from ezpz.history.summary import format_compact_summary
    from ezpz.memory import (
        format_memory_summary,
        get_current_memory_allocated,
        get_current_memory_reserved,
        get_max_memory_allocated,
        get_max_memory_reserved,
        get_memory_metrics,
        reset_peak_memory_stats,
    )
    from ezpz.torch_setup import cleanup, get_torch_device, setup_torch
    from ezpz.tracker import setup_mlflow, setup_wandb


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        # submodules such as ezpz.flops, ezpz.tracker
        try:
            return importlib.import_module(f"ezpz.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ezpz.{name}":
                raise
            raise AttributeError(f"module 'ezpz' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
