"""``setup_tracker``: ezpz 0.26's way to build a tracker outside of ``History``.

Selection and validation are those of ``History(backends=...)``
(:func:`ezpz.tracker.select.resolve_tracker`): unknown names raise, ``"none"``
or nothing gives a :class:`~ezpz.tracker.NullTracker`, backends are built on
rank 0 only. See ``docs/migrating.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ezpz.tracker.fanout import Tracker
from ezpz.tracker.select import resolve_tracker

__all__ = ["setup_tracker"]


def setup_tracker(
    project_name: str | None = None,
    backends: str | Sequence[str] | None = None,
    config: Mapping[str, Any] | None = None,
    outdir: str | os.PathLike[str] | None = None,
    rank: int | None = None,
    *,
    world_size: int | None = None,
) -> Tracker:
    """Build a :class:`~ezpz.tracker.Tracker` for ``backends`` and make it StopWatch's target.

    Args:
        project_name: W&B project / MLflow experiment (same resolution as History).
        backends: ``"wandb,csv"`` or a list; ``None`` reads
            ``EZPZ_TRACKER_BACKENDS`` (unset: no backends, a NullTracker).
            Unknown names raise ``ValueError`` listing the known ones.
        config: logged once through every backend.
        outdir: where file backends (csv) write; default ``./outputs``.
        rank: this process's rank (default: from MPI / launcher variables);
            backends are built on rank 0 only, other ranks get a Tracker that
            delivers nothing.
        world_size: default from MPI / launcher variables.

    Pass the result to ``History(tracker=...)`` to log a History's metrics
    through it, or call ``tracker.log(...)`` yourself; ``tracker.finish()``
    (or ``History.finalize()``) drains and closes it.
    """
    if rank is None or world_size is None:
        from ezpz.dist import get_rank, get_world_size

        rank = get_rank() if rank is None else int(rank)
        world_size = get_world_size() if world_size is None else int(world_size)
    tracker = resolve_tracker(
        backends=backends if backends is not None else None,
        project_name=project_name,
        config=config,
        outdir=outdir,
        rank=rank,
        world_size=world_size,
    )
    from ezpz.history.stopwatch import set_active_tracker

    set_active_tracker(tracker)
    return tracker
