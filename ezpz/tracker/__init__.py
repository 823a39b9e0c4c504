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
    "CSVBackend",
    "ENTRY_POINT_GROUP",
    "FinishReport",
    "LaneReport",
    "MLflowBackend",
    "MlflowBackend",
    "NullTracker",
    "Tracker",
    "TrackerBackend",
    "handle_use_wandb",
    "known_backends",
    "parse_backend_names",
    "register_backend",
    "resolve_tracker",
    "setup_mlflow",
    "setup_tracker",
    "setup_wandb",
    "unregister_backend",
    "WandbBackend",
]

if TYPE_CHECKING:  # pragma: no cover
    from ezpz.tracker.compat import setup_tracker
    from ezpz.tracker.csv_backend import CSVBackend
    from ezpz.tracker.mlflow_backend import MlflowBackend, setup_mlflow
    from ezpz.tracker.mlflow_backend import MlflowBackend as MLflowBackend
    from ezpz.tracker.wandb_backend import WandbBackend, setup_wandb

# name -> (module, attribute); backend classes load their module (not wandb/mlflow) on use
_LAZY = {
    "setup_wandb": ("ezpz.tracker.wandb_backend", "setup_wandb"),
    "setup_mlflow": ("ezpz.tracker.mlflow_backend", "setup_mlflow"),
    "setup_tracker": ("ezpz.tracker.compat", "setup_tracker"),
    # ezpz 0.26 names of the built-in backends
    "CSVBackend": ("ezpz.tracker.csv_backend", "CSVBackend"),
    "WandbBackend": ("ezpz.tracker.wandb_backend", "WandbBackend"),
    "MlflowBackend": ("ezpz.tracker.mlflow_backend", "MlflowBackend"),
    "MLflowBackend": ("ezpz.tracker.mlflow_backend", "MlflowBackend"),
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ezpz.tracker' has no attribute {name!r}")
    import importlib

    module, attr = target
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
