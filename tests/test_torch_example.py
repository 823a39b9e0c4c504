"""The example's command line, and one single-process run (no launcher)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="the example trains a torch model")

from ezpz.examples.train import build_model, parse_args  # noqa: E402


def run_example(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "PMI_RANK")}
    return subprocess.run(
        [sys.executable, "-m", "ezpz.examples.train", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=env,
    )


def test_help_documents_the_options():
    out = run_example("--help")
    assert out.returncode == 0
    for option in ("--steps", "--batch-size", "--eval-every", "--outdir", "--backends", "--dtype"):
        assert option in out.stdout
    assert "EZPZ_TRACKER_BACKENDS" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--steps", "0"], "--steps must be >= 1"), (["--dtype", "fp8"], "invalid choice")],
)
def test_bad_arguments_are_clear_errors(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_model_shape_follows_the_arguments():
    args = parse_args(["--features", "5", "--hidden", "7", "--depth", "2", "--classes", "3"])
    model = build_model(args)
    linear = [m for m in model if hasattr(m, "weight")]
    assert [tuple(m.weight.shape) for m in linear] == [(7, 5), (7, 7), (3, 7)]


def test_single_process_run_with_default_outdir(tmp_path):
    out = run_example(
        "--steps", "4", "--eval-every", "2", "--batch-size", "8", "--hidden", "8",
        "--depth", "1", "--eval-size", "32", "--backends", "none",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    runs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 1
    for name in ("train.h5", "eval.h5", "report.md", "metrics.jsonl"):
        assert (runs[0] / name).is_file(), name
    assert "train/loss=" in out.stderr and "eval/accuracy=" in out.stderr
