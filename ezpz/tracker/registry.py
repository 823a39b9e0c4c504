"""Which backend names exist and which class each one means.

Three sources, looked up in this order:

1. ``register_backend(name, cls)`` calls made by the program;
2. the built-in backends, named by module path so that naming them imports
   nothing until a backend is really built;
3. third-party packages that expose a ``TrackerBackend`` subclass in the
   ``ezpz.trackers`` entry-point group (``name = "pkg.module:Class"``).

Entry points cannot shadow a built-in name (a warning says so); an explicit
``register_backend`` can, because the program asked for it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ezpz.tracker.base import TrackerBackend

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ezpz.trackers"

# The name that selects no backend at all (a NullTracker).
NONE_NAME = "none"

BUILTIN_BACKENDS: dict[str, str] = {
    "csv": "ezpz.tracker.csv_backend:CSVBackend",
    "wandb": "ezpz.tracker.wandb_backend:WandbBackend",
    "mlflow": "ezpz.tracker.mlflow_backend:MlflowBackend",
}

_registered: dict[str, type[TrackerBackend]] = {}


def normalize_name(name: str) -> str:
    """Backend names are case-insensitive and ignore surrounding spaces."""
    return name.strip().lower()


def register_backend(name: str, cls: type[TrackerBackend]) -> None:
    """Make ``cls`` available as ``backends="<name>"`` (on every rank that calls it)."""
    if not isinstance(name, str) or not normalize_name(name):
        raise ValueError(f"backend name must be a non-empty string, got {name!r}")
    key = normalize_name(name)
    if "," in key:
        raise ValueError(f"backend name {name!r} must not contain a comma")
    if key == NONE_NAME:
        raise ValueError(f"{NONE_NAME!r} is reserved: it selects no backend")
    if not (isinstance(cls, type) and issubclass(cls, TrackerBackend)):
        raise TypeError(
            f"register_backend({name!r}, ...) needs a TrackerBackend subclass, got {cls!r}"
        )
    _check_complete(cls, name)
    if key in BUILTIN_BACKENDS:
        logger.warning("register_backend(%r) replaces the built-in %r backend", name, key)
    _registered[key] = cls


def _check_complete(cls: type[TrackerBackend], name: str) -> None:
    """A backend class that leaves an abstract method unimplemented is refused here."""
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        raise TypeError(
            f"tracker backend {name!r} ({cls.__qualname__}) does not implement "
            f"{', '.join(missing)}: every TrackerBackend needs log, log_config and finish"
        )


def unregister_backend(name: str) -> None:
    """Forget a ``register_backend`` registration (no error when absent)."""
    _registered.pop(normalize_name(name), None)


def _entry_points() -> dict[str, Any]:
    """Entry points of the ``ezpz.trackers`` group, by normalized name.

    Scanned on every call (only when a name is not registered or built in,
    or to list the known names): construction-time only, and always fresh.
    """
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        key = normalize_name(ep.name)
        if key in BUILTIN_BACKENDS or key == NONE_NAME:
            logger.warning(
                "entry point %r (%s) ignored: %r is a built-in name", ep.name, ep.value, key
            )
            continue
        found.setdefault(key, ep)
    return found


def known_backends() -> list[str]:
    """Every name ``backends=`` accepts, sorted (``"none"`` included)."""
    names = {NONE_NAME, *BUILTIN_BACKENDS, *_registered, *_entry_points()}
    return sorted(names)


def is_known(name: str) -> bool:
    key = normalize_name(name)
    if key == NONE_NAME or key in _registered or key in BUILTIN_BACKENDS:
        return True
    return key in _entry_points()


def unknown_backend_error(names: list[str], source: str) -> ValueError:
    known = ", ".join(known_backends())
    return ValueError(
        f"unknown tracker backend(s) {', '.join(map(repr, names))} in {source}; known backends: {known}"
    )


def load_backend_class(name: str) -> type[TrackerBackend]:
    """The class behind ``name``; imports its module (and only it)."""
    key = normalize_name(name)
    cls: Any
    if key in _registered:
        return _registered[key]
    if key in BUILTIN_BACKENDS:
        module, _, attr = BUILTIN_BACKENDS[key].partition(":")
        cls = getattr(importlib.import_module(module), attr)
    else:
        ep = _entry_points().get(key)
        if ep is None:
            raise unknown_backend_error([name], "backends")
        cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, TrackerBackend)):
        raise TypeError(
            f"tracker backend {name!r} resolves to {cls!r}, not a TrackerBackend subclass"
        )
    _check_complete(cls, name)
    return cls
