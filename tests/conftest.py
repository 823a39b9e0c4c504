"""Shared test set-up: keep tests off the network and out of the user's files."""

from __future__ import annotations

import os

# Backends must never reach the internet from the test suite.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests choose backends explicitly; an exported selection must not leak in.
os.environ.pop("EZPZ_TRACKER_BACKENDS", None)
