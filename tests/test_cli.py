"""``ezpz-history report``: rebuild finalize output from the JSONL of a killed run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

CLI = Path(sys.executable).parent / "ezpz-history"

KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from ezpz.history import History
    hist = History(report_dir=sys.argv[1], backends="none")
    for i in range(40):
        hist.update({"train/loss": 1.0 / (i + 1), "train/chains": np.arange(3.0) + i,
                     "lr": 0.01}, step=i)
        if i % 10 == 0:
            hist.update({"eval/acc": i / 40}, step=i)
    print(hist.jsonl_path, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # killed before finalize
    """
)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def killed_jsonl(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killed")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(root)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    path = Path(proc.stdout.strip())
    with path.open("a") as f:  # the torn last line a kill mid-write leaves
        f.write('{"_step": 40, "train/lo')
    return path


def test_console_script_is_installed():
    assert CLI.exists()


def test_help_texts():
    top = _run_cli("--help")
    assert top.returncode == 0 and "report" in top.stdout
    sub = _run_cli("report", "--help")
    assert sub.returncode == 0
    for word in ("RUN.jsonl", "--outdir", "--warmup", "--num-chains", "--no-plots", "killed"):
        assert word in sub.stdout


def test_report_from_killed_run(killed_jsonl, tmp_path):
    out = tmp_path / "rebuilt"
    proc = _run_cli("report", str(killed_jsonl), "--outdir", str(out), "--warmup", "0.1")
    assert proc.returncode == 0, proc.stderr
    assert "report.md" in proc.stdout
    with xr.open_dataset(out / "train.h5") as ds:
        np.testing.assert_allclose(ds["loss"].values, 1.0 / np.arange(1, 41))
        np.testing.assert_array_equal(ds["step"].values, np.arange(40))
        assert ds["chains"].shape == (40, 3)
        np.testing.assert_array_equal(ds["chains"].values[5], [5.0, 6.0, 7.0])
        assert ds.attrs["run_id"] == killed_jsonl.stem
    with xr.open_dataset(out / "eval.h5") as ds:
        np.testing.assert_allclose(ds["acc"].values, [0.0, 0.25, 0.5, 0.75])
    with xr.open_dataset(out / "history.h5") as ds:
        assert ds.sizes["draw"] == 40
    assert (out / "metrics.jsonl").read_bytes() == killed_jsonl.read_bytes()
    assert list((out / "plots" / "mplot" / "train").glob("*.png"))
    assert list((out / "plots" / "tplot" / "eval").glob("*.txt"))
    text = (out / "report.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert targets
    for target in targets:
        assert (out / target).exists(), target
    assert "torn" in proc.stderr.lower() or "skip" in proc.stderr.lower()


def test_report_without_plots_and_with_config(killed_jsonl, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"lr": 0.01, "batch": 32}')
    out = tmp_path / "rebuilt"
    proc = _run_cli(
        "-q", "report", str(killed_jsonl), "-o", str(out), "--no-plots", "--config", str(config)
    )
    assert proc.returncode == 0, proc.stderr
    assert not (out / "plots").exists()
    with xr.open_dataset(out / "train.h5") as ds:
        assert '"batch": 32' in ds.attrs["config"]
    assert "batch" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "missing.jsonl", "--outdir", "x"], "no such file"),
        (["report", "f.jsonl", "--outdir", "x", "--warmup", "-1"], "warmup"),
        (["report", "f.jsonl", "--outdir", "x", "--num-chains", "0"], "num-chains"),
        (["report", "f.jsonl"], "--outdir"),
        ([], "COMMAND"),
    ],
)
def test_bad_usage_is_a_clear_error(tmp_path, args, message):
    proc = subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert message in proc.stderr


def test_empty_jsonl(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = _run_cli("report", str(empty), "--outdir", str(tmp_path / "out"))
    assert proc.returncode == 1 and "no metrics" in proc.stderr
