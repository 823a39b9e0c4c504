"""The two questions every wandb-aware part of ezpz asks, answered once.

* :func:`wandb_disabled` -- is ``WANDB_DISABLED`` set to a true value?
* :func:`active_run` -- the program's live ``wandb.run``, if it has one.

Neither imports wandb: a program that never imported it has no run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from ezpz._env import env_flag

__all__ = ["DISABLED_ENV", "active_run", "wandb_disabled"]

DISABLED_ENV = "WANDB_DISABLED"
# wandb's stand-ins for "no run" (disabled mode, before init).
_NOOP_RUN_TYPES = frozenset({"NoopRun", "RunDisabled", "PreInitObject"})


def wandb_disabled(env: Mapping[str, str] | None = None) -> bool:
    """True when ``WANDB_DISABLED`` is a true value (1/true/yes/on); ``env`` replaces os.environ."""
    return env_flag(DISABLED_ENV, env=env)


def active_run() -> Any | None:
    """The live ``wandb.run``, or None: wandb not imported, no run, or a no-op stand-in."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None or type(run).__name__ in _NOOP_RUN_TYPES:
        return None
    if getattr(run, "disabled", False) is True:
        return None
    return run
