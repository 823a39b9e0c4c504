"""Tracking backends: ``Tracker`` fans metrics out to W&B, MLflow, CSV or your own.

Importing this package imports only the standard library; each backend's
heavy dependency (wandb, mlflow) is imported when that backend is built.
``setup_wandb`` and ``setup_mlflow`` are resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ezpz.tracker.base import TrackerBackend
from ezpz.tracker.dispatch import FinishReport, LaneReport
from ezpz.tracker.fanout import Tracker
from ezpz.tracker.null import NullTracker
from ezpz.tracker.registry import (
    ENTRY_POINT_GROUP,
    known_backends,
    register_backend,
    unregister_backend,
)
from ezpz.tracker.select import (
    handle_use_wandb,
    parse_backend_names,
    resolve_tracker,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FinishReport",
    "LaneReport",
    "NullTracker",
    "Tracker",
    "TrackerBackend",
    "handle_use_wandb",
    "known_backends",
    "parse_backend_names",
    "register_backend",
    "resolve_tracker",
    "setup_mlflow",
    "setup_wandb",
    "unregister_backend",
]

if TYPE_CHECKING:  # pragma: no cover
    from ezpz.tracker.mlflow_backend import setup_mlflow
    from ezpz.tracker.wandb_backend import setup_wandb

_LAZY = {
    "setup_wandb": "ezpz.tracker.wandb_backend",
    "setup_mlflow": "ezpz.tracker.mlflow_backend",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ezpz.tracker' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
