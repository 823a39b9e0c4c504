"""Helpers of the fault suite: run a script in a child process, read what it left.

Faults that kill or limit a process (SIGKILL, RLIMIT_FSIZE, a read-only
directory for root) run in a child process, so a regression fails through
the child's exit status or a subprocess timeout instead of taking the test
run down with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

MPIEXEC = Path(sys.executable).with_name("mpiexec")
SETPRIV = shutil.which("setpriv")


def run_script(
    tmp_path: Path,
    source: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 240,
    mpiexec_ranks: int | None = None,
    prefix: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` (dedented) with ``args``; under ``mpiexec -n N`` when asked."""
    script = tmp_path / f"fault_{abs(hash(source)) % 10**8}.py"
    script.write_text(textwrap.dedent(source))
    cmd = [sys.executable, str(script), *args]
    if mpiexec_ranks is not None:
        cmd = [str(MPIEXEC), "-n", str(mpiexec_ranks), *cmd]
    full_env = {
        **os.environ,
        "EZPZ_TRACK_MEMORY": "0",
        "MPLBACKEND": "Agg",
        "WANDB_MODE": "offline",
        # a loaded CI machine must not make the csv backend's queue drop rows:
        # these tests check what a fault keeps, not the queue's overflow policy
        "EZPZ_TRACKER_QUEUE_SIZE": "1000000",
        **(env or {}),
    }
    full_env.pop("EZPZ_TRACKER_BACKENDS", None)
    return subprocess.run(
        [*(prefix or []), *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=tmp_path,
    )


def jsonl_lines(path: Path) -> tuple[list[dict], list[str]]:
    """(parsed lines, unparsable lines) of a JSONL file."""
    good, bad = [], []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            good.append(json.loads(line))
        except json.JSONDecodeError:
            bad.append(line)
    return good, bad


def metric_steps(records: list[dict]) -> list[int]:
    return [r["_step"] for r in records if "_event" not in r]


def csv_frame(path: Path):
    import pandas as pd

    return pd.read_csv(path, skip_blank_lines=True)
