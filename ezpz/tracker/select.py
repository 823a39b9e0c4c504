"""Choosing and building the backends of a run: ``resolve_tracker`` and friends.

Selection, in order: ``tracker=`` (a pre-built Tracker) wins; else
``backends=`` (``"wandb,csv"`` or a list); else ``EZPZ_TRACKER_BACKENDS``;
``"none"`` or nothing selects a NullTracker. An active ``wandb.run`` with no
``backends=`` is adopted (DeprecationWarning). Names are validated on every
rank, so a typo raises the same ValueError everywhere; backends are built on
rank 0 only, so other ranks make no network calls and write no files.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ezpz._env import env_str
from ezpz._redact import protect_logger, redact_config
from ezpz.tracker import registry
from ezpz.tracker.base import TrackerBackend
from ezpz.tracker.fanout import Tracker
from ezpz.tracker.null import NullTracker
from ezpz.tracker.wandb_state import active_run as active_wandb_run
from ezpz.tracker.wandb_state import wandb_disabled

logger = logging.getLogger(__name__)
protect_logger(logger)  # URL credentials and tokens never reach the log

ENV_BACKENDS = "EZPZ_TRACKER_BACKENDS"


def parse_backend_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"wandb, CSV"`` or ``["wandb", "csv"]`` -> ``["wandb", "csv"]``.

    Lower-cased, duplicates removed (first wins), empty entries ignored;
    ``"none"`` (alone) -> ``[]``. Raises TypeError/ValueError on bad input.
    """
    if spec is None:
        return []
    if isinstance(spec, str):
        parts = spec.split(",")
    elif isinstance(spec, Sequence):
        parts = []
        for item in spec:
            if not isinstance(item, str):
                raise TypeError(f"backend names must be strings, got {item!r}")
            parts.extend(item.split(","))
    else:
        raise TypeError(
            f"backends must be a string or a list of strings, got {type(spec).__name__}"
        )
    names: list[str] = []
    for part in parts:
        name = registry.normalize_name(part)
        if name and name not in names:
            names.append(name)
    if registry.NONE_NAME in names:
        if len(names) > 1:
            raise ValueError(f"'none' cannot be combined with other backends: {spec!r}")
        return []
    return names


def _accepted_kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``cls.__init__`` accepts."""
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    return {k: v for k, v in kwargs.items() if k in names}


def _named_parameters(cls: type) -> set[str]:
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }


def create_backend(
    name: str, *, identity: Mapping[str, Any] | None = None, **kwargs: Any
) -> TrackerBackend | None:
    """Build backend ``name``; on failure log why and return None (training goes on).

    ``identity`` (``ezpz_run_id``, ``run_name``, ``resumed``, ``resume_step``)
    goes only to constructors that name those parameters explicitly.
    """
    try:
        cls = registry.load_backend_class(name)
        named = _named_parameters(cls) if identity else set()
        extra = {k: v for k, v in (identity or {}).items() if k in named}
        backend = cls(**_accepted_kwargs(cls, kwargs), **extra)
    except Exception as exc:
        logger.error(
            "tracker backend %r could not be started (%s: %s); the run continues without it",
            name,
            type(exc).__name__,
            exc,
            exc_info=True,
        )
        return None
    return backend


def _validate(names: list[str], source: str) -> None:
    unknown = [n for n in names if not registry.is_known(n)]
    if unknown:
        raise registry.unknown_backend_error(unknown, source)


def resolve_tracker(
    tracker: Tracker | TrackerBackend | None = None,
    backends: str | Sequence[str] | None = None,
    *,
    project_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    outdir: str | os.PathLike[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    identity: Mapping[str, Any] | None = None,
) -> Tracker:
    """The Tracker a History uses; call it on every rank (see module doc).

    ``identity``: the run's ``ezpz_run_id``, ``run_name``, ``resumed`` and
    ``resume_step``, for the backends that take them (wandb, mlflow).
    """
    if tracker is not None:
        if isinstance(tracker, TrackerBackend):  # a lone backend: wrap it
            tracker = Tracker([tracker]) if rank == 0 else Tracker()
        if not isinstance(tracker, Tracker):
            raise TypeError(f"tracker= needs a Tracker, got {type(tracker).__name__}")
        if backends is not None:
            logger.info("tracker= was given; backends=%r is ignored", backends)
        if config and rank == 0:
            tracker.log_config(config)
        return tracker

    adopt_run = None
    if backends is not None:
        names, source = parse_backend_names(backends), f"backends={backends!r}"
    else:
        env = env_str(ENV_BACKENDS, "")
        names, source = parse_backend_names(env), f"{ENV_BACKENDS}={env!r}"
        explicit_none = env.strip().lower() == registry.NONE_NAME
        adopt_run = None if explicit_none or wandb_disabled() else active_wandb_run()
        if adopt_run is not None:
            warnings.warn(
                "History() found an active wandb.run and is logging to it; this is "
                "deprecated: pass backends='wandb' (and project_name=) instead",
                DeprecationWarning,
                stacklevel=3,
            )
            if "wandb" not in names:
                names.append("wandb")
    _validate(names, source)
    if "wandb" in names and wandb_disabled():
        names.remove("wandb")
        if rank == 0:
            logger.info("WANDB_DISABLED is set: the wandb backend is not started")
    if not names:
        return NullTracker()
    if rank != 0:
        return Tracker(requested=names)

    common: dict[str, Any] = {
        "project_name": project_name,
        # secrets redacted for every backend, custom ones included (ezpz._redact)
        "config": redact_config(dict(config)) if config else None,
        "outdir": outdir,
        "rank": rank,
        "world_size": world_size,
    }
    built = Tracker(requested=names)
    for name in names:
        extra = {"run": adopt_run} if name == "wandb" and adopt_run is not None else {}
        backend = create_backend(name, identity=identity, **common, **extra)
        if backend is not None:
            built.add_backend(backend, name=name)
    if config:
        built.log_config(config)
    return built


def handle_use_wandb(
    tracker: Tracker,
    use_wandb: bool | None,
    *,
    project_name: str | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Tracker:
    """The deprecated ``update(use_wandb=True)``: warn once, make sure wandb is attached.

    Returns the tracker to use from now on (a new one when ``tracker`` was a
    NullTracker). Tries to start wandb once per tracker, on rank 0 only.
    """
    if not use_wandb or getattr(tracker, "_use_wandb_handled", False):
        return tracker
    tracker._use_wandb_handled = True
    warnings.warn(
        "update(use_wandb=True) is deprecated: pass backends='wandb' to History() instead",
        DeprecationWarning,
        stacklevel=3,
    )
    if rank != 0 or tracker.get_backend("wandb") is not None or wandb_disabled():
        return tracker
    run = active_wandb_run()
    extra = {"run": run} if run is not None else {}
    backend = create_backend(
        "wandb", project_name=project_name, rank=rank, world_size=world_size, **extra
    )
    if backend is None:
        return tracker
    if isinstance(tracker, NullTracker) or tracker.finished:
        upgraded = Tracker(requested=("wandb",))
        upgraded._use_wandb_handled = True
        upgraded.add_backend(backend, name="wandb")
        return upgraded
    tracker.add_backend(backend, name="wandb")
    return tracker
