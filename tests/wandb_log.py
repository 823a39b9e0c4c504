"""Test helpers: read an offline wandb run back with wandb's own log reader.

``wandb leet inspect --json`` (shipped with wandb) prints the records of a
run's ``.wandb`` transaction log; tests compare them with what was logged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def inspect_log(log_file: Path) -> list[dict]:
    """Every record of one ``.wandb`` log file, via wandb's own CLI."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(log_file)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def read_records(run_dir: Path) -> list[dict]:
    """Every record of the run's .wandb log (the one ``run-*.wandb`` in ``run_dir``)."""
    (log_file,) = run_dir.glob("run-*.wandb")
    return inspect_log(log_file)


def history_rows(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def run_config(records: list[dict]) -> dict:
    config: dict = {}
    for r in records:
        if r["type"] == "run":
            config.update(r["run"]["config"]["update"])
        elif r["type"] == "config":
            config.update(r["config"].get("update", {}))
    return config


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "wandb").glob("offline-run-*")) if (root / "wandb").exists() else []
