"""The backend interface every tracker backend implements."""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from typing import Any


class TrackerBackend(abc.ABC):
    """One destination for metrics (W&B, MLflow, CSV, your own).

    Subclass it, set ``name``, implement ``log``, ``log_config`` and
    ``finish`` (abstract: a subclass missing one of them cannot be
    instantiated, so a broken custom backend fails with a ``TypeError`` where
    it is built, not later in a worker thread); override the optional hooks
    when the destination supports them. Constructors receive keyword
    arguments ``project_name``, ``config``, ``outdir``, ``rank``,
    ``world_size`` (and may ignore any of them via ``**kwargs``; a constructor
    that lists only some of them gets only those).

    The :class:`~ezpz.tracker.Tracker` calls every method from one worker
    thread per backend, in the order the calls were made, so a backend needs
    no locking of its own. Exceptions are caught, counted and logged once per
    kind; they never reach the training loop.
    """

    name: str = "base"

    @abc.abstractmethod
    def log(self, metrics: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """One row of metrics at ``step``; ``commit=False`` holds it open for more keys."""

    @abc.abstractmethod
    def log_config(self, config: Mapping[str, Any]) -> None:
        """The run's configuration (already redacted by ezpz)."""

    @abc.abstractmethod
    def finish(self) -> None:
        """Flush and close the destination; called once, last."""

    # Optional hooks: default to doing nothing.
    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:  # noqa: B027
        """A table (e.g. the whole training history on finalize)."""

    def log_image(self, key: str, path: str, caption: str | None = None) -> None:  # noqa: B027
        """An image file (e.g. a plot written by finalize)."""

    def log_artifact(self, path: str, name: str | None = None) -> None:  # noqa: B027
        """A file or directory to keep with the run (JSONL, report, datasets)."""

    def watch(self, model: Any, **kwargs: Any) -> None:  # noqa: B027
        """Gradient/parameter tracking where the destination supports it."""

    def set_outdir(self, outdir: str | os.PathLike[str]) -> None:  # noqa: B027
        """Move file outputs to ``outdir`` (finalize redirects file backends there)."""

    def supersede(self, step: int) -> None:  # noqa: B027
        """A resumed run logs ``step`` again: earlier rows from ``step`` on are replaced.

        File backends (csv) drop those rows; services that cannot delete
        points (W&B, MLflow) keep their first values and skip the repeats.
        """

    def mark_interrupted(self) -> None:  # noqa: B027
        """The run was interrupted by a signal; the next ``finish()`` ends it as such
        (W&B: a non-zero exit code, MLflow: status KILLED)."""
