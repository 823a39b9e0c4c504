"""``NullTracker``: what ``backends="none"`` gives you; every call is a no-op."""

from __future__ import annotations

from ezpz.tracker.base import TrackerBackend
from ezpz.tracker.fanout import Tracker


class NullTracker(Tracker):
    """A Tracker with no backends and no threads; ``finish()`` reports nothing."""

    def __init__(self) -> None:
        super().__init__((), queue_size=1, finish_timeout=1.0)

    def add_backend(self, backend: TrackerBackend, name: str | None = None) -> None:
        raise TypeError("a NullTracker takes no backends; build a Tracker instead")
