"""The backend protocol every tracker backend implements."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any


class TrackerBackend:
    """One destination for metrics (W&B, MLflow, CSV, your own).

    Subclass it, set ``name``, implement ``log``, ``log_config`` and
    ``finish``; override the optional hooks when the destination supports
    them. Constructors receive keyword arguments ``project_name``, ``config``,
    ``outdir``, ``rank``, ``world_size`` (and may ignore any of them via
    ``**kwargs``; a constructor that lists only some of them gets only those).

    The :class:`~ezpz.tracker.Tracker` calls every method from one worker
    thread per backend, in the order the calls were made, so a backend needs
    no locking of its own. Exceptions are caught, counted and logged once per
    kind; they never reach the training loop.
    """

    name: str = "base"

    def log(self, metrics: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        raise NotImplementedError

    def log_config(self, config: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    # Optional hooks: default to doing nothing.
    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A table (e.g. the whole training history on finalize)."""

    def log_image(self, key: str, path: str, caption: str | None = None) -> None:
        """An image file (e.g. a plot written by finalize)."""

    def log_artifact(self, path: str, name: str | None = None) -> None:
        """A file or directory to keep with the run (JSONL, report, datasets)."""

    def watch(self, model: Any, **kwargs: Any) -> None:
        """Gradient/parameter tracking where the destination supports it."""

    def set_outdir(self, outdir: str | os.PathLike[str]) -> None:
        """Move file outputs to ``outdir`` (finalize redirects file backends there)."""
