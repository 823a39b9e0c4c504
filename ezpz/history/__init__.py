"""History: record, reduce, log, summarise and report training metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["History", "StopWatch", "grab_tensor"]

if TYPE_CHECKING:  # pragma: no cover
    from ezpz.history.compat import grab_tensor
    from ezpz.history.core import History
    from ezpz.history.stopwatch import StopWatch


def __getattr__(name: str) -> Any:
    # Lazy, so importing one part (e.g. ezpz.history.store) loads only that part.
    if name == "History":
        from ezpz.history.core import History

        return History
    if name == "StopWatch":
        from ezpz.history.stopwatch import StopWatch

        return StopWatch
    if name == "grab_tensor":  # ezpz 0.26 name
        from ezpz.history.compat import grab_tensor

        return grab_tensor
    raise AttributeError(f"module 'ezpz.history' has no attribute {name!r}")
