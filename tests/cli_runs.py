"""Fixture runs for the ``ezpz-history watch/compare/sync`` tests.

Deterministic JSONL logs shaped as a History writes them: metric rows with
cross-rank statistics, vector metrics, an eval group on fewer steps, NaN and
infinity in their string encoding, and ``_event`` lifecycle lines.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

CLI = Path(sys.executable).parent / "ezpz-history"
T0 = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC

RUN_A = "2026-01-01-120000-aaaaaa"
RUN_B = "2026-01-02-120000-bbbbbb"


def _enc(v: float) -> float | str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def row_a(i: int) -> dict:
    loss = 2.0 / (i + 1) + 0.01 * (i % 3)
    return {
        "_step": i,
        "_time": T0 + 0.5 * i,
        "train/loss": loss,
        "train/acc": min(1.0, i / 120),
        "lr": 0.001,
        "train/chains": [float(i), float(i + 1)],
        "train/loss/mean": loss * 1.01,
        "train/loss/max": loss * 1.2,
        "train/loss/min": loss * 0.8,
        "train/loss/std": 0.02 + 0.001 * (i % 5),
    }


def write_run_a(
    root: Path, *, steps: int = 100, finalized: bool = True, run_id: str = RUN_A
) -> Path:
    """Run A: 4 ranks, train group with stats, eval every 10 steps, events."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{run_id}.jsonl"
    lines = [
        {
            "_event": "start",
            "_time": T0 - 1.0,
            "run_id": run_id,
            "world_size": 4,
            "job_id": "1234",
            "run_name": "baseline",
            "resumed": False,
            "config": {"lr": 0.001, "model": {"depth": 4}, "wandb_api_key": "sekrit-value"},
        }
    ]
    for i in range(steps):
        lines.append(row_a(i))
        if i % 10 == 0:
            lines.append({"_step": i, "_time": T0 + 0.5 * i + 0.1, "eval/acc": i / 100})
    lines[5]["train/acc"] = _enc(math.nan)
    if finalized:
        lines.append({"_event": "finalized", "_time": T0 + 0.5 * steps})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def write_run_b(root: Path, *, steps: int = 150) -> Path:
    """Run B: longer, no eval group, an extra key, no events (an older log)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{RUN_B}.jsonl"
    lines = []
    for i in range(steps):
        lines.append(
            {
                "_step": 2 * i,
                "_time": T0 + 86400 + i,
                "train/loss": 1.5 / (i + 1),
                "train/acc": min(1.0, i / 100),
                "train/gnorm": 1.0 + (i % 7) / 10,
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
