"""Names for the W&B project and the MLflow experiment (docs/backends.md).

W&B project: argument > ``WB_PROJECT`` > ``WANDB_PROJECT`` > ``WB_PROJECT_NAME``
> derived from the script. MLflow experiment: argument >
``MLFLOW_EXPERIMENT_NAME`` > the same three W&B variables > derived from the
script. Empty strings count as unset.

The derived name is ``ezpz.{parent}.{stem}`` of the running script, e.g.
``python -m ezpz.examples.vit`` -> ``ezpz.examples.vit`` and
``python ~/proj/train.py`` -> ``ezpz.proj.train``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

WANDB_PROJECT_VARS = ("WB_PROJECT", "WANDB_PROJECT", "WB_PROJECT_NAME")
MLFLOW_EXPERIMENT_VARS = ("MLFLOW_EXPERIMENT_NAME", *WANDB_PROJECT_VARS)

# Used when there is no script to name the run after (python -c, a REPL, a notebook).
INTERACTIVE_NAME = "ezpz.interactive"

# W&B rejects these characters in project names and caps the length at 128.
_WANDB_BAD_CHARS = re.compile(r"[/\\#?%:]")
_WANDB_MAX_LEN = 128


def _first_set(names: tuple[str, ...], env: Mapping[str, str]) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def script_derived_name(argv0: str | None = None) -> str:
    """``ezpz.{parent}.{stem}`` of the script that is running.

    A package's ``__main__.py`` (``python -m pkg``) is named after the package.
    """
    script = sys.argv[0] if argv0 is None else argv0
    if not script or script in ("-c", "-m", "-"):
        return INTERACTIVE_NAME
    path = Path(script)
    stem, parent = path.stem, path.parent.name
    if stem == "__main__":
        stem, parent = parent, path.parent.parent.name
    parts = [p for p in ("ezpz", parent, stem) if p]
    # An ezpz example is already under "ezpz": don't say it twice.
    if len(parts) > 2 and parts[1] == "ezpz":
        parts.pop(1)
    return ".".join(parts) if len(parts) > 1 else INTERACTIVE_NAME


def _clean_wandb_project(name: str) -> str:
    cleaned = _WANDB_BAD_CHARS.sub("-", name)[:_WANDB_MAX_LEN]
    return cleaned or INTERACTIVE_NAME


def wandb_project(name: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The W&B project: ``name`` > WB_PROJECT > WANDB_PROJECT > WB_PROJECT_NAME > script."""
    env = os.environ if env is None else env
    chosen = (name or "").strip() or _first_set(WANDB_PROJECT_VARS, env)
    return _clean_wandb_project(chosen or script_derived_name())


def mlflow_experiment(name: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The MLflow experiment: ``name`` > MLFLOW_EXPERIMENT_NAME > W&B project vars > script."""
    env = os.environ if env is None else env
    chosen = (name or "").strip() or _first_set(MLFLOW_EXPERIMENT_VARS, env)
    return chosen or script_derived_name()
