"""A real History through finalize(): plots per group, a report whose links resolve and whose
statistics match what was logged; the same from the JSONL of a run killed before finalize."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("plotext")
pytest.importorskip("xarray")

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
N_TRAIN, N_EVAL = 120, 13


def _log_run(report_dir: Path):
    import ezpz

    history = ezpz.History(backends="none", report_dir=str(report_dir), config={"lr": 0.01})
    rng = np.random.default_rng(0)
    for step in range(N_TRAIN):
        metrics = {
            "train/loss": float(np.exp(-step / 30) + 0.01 * rng.standard_normal()),
            "train/grad/norm": float(1 + step % 7),
            "train/chains": rng.standard_normal(5),
        }
        if step == 40:
            metrics["train/loss"] = float("nan")
        if step % 10 == 0 and step // 10 < N_EVAL:
            metrics["eval/acc"] = step / N_TRAIN
        history.update(metrics, step=step)
    return history


def _check_outdir(outdir: Path, logged: dict[str, np.ndarray], warmup: float) -> str:
    report = (outdir / "report.md").read_text(encoding="utf-8")
    links = LINK.findall(report)
    for link in links:
        assert (outdir / unquote(link)).is_file(), f"{link} does not resolve"
    pngs = {p.relative_to(outdir).as_posix() for p in (outdir / "plots/mplot").rglob("*.png")}
    assert pngs == {
        "plots/mplot/train/loss.png",
        "plots/mplot/train/grad-norm.png",
        "plots/mplot/train/chains.png",
        "plots/mplot/eval/acc.png",
    }
    assert pngs <= {unquote(link) for link in links}
    txts = list((outdir / "plots/tplot").rglob("*.txt"))
    assert len(txts) == 2 * 4 and all(p.stat().st_size > 0 for p in txts)

    # the overview row of train/loss equals numpy over what was logged, after warmup
    loss = logged["train/loss"]
    kept = loss[int(len(loss) * warmup) :]
    ok = kept[np.isfinite(kept)]
    row = next(line for line in report.splitlines() if line.startswith("| train/loss |")).split(
        "|"
    )[2:-1]
    assert [float(c) for c in row[:5]] == pytest.approx(
        [kept[-1], ok.min(), ok.max(), ok.mean(), ok.std()], rel=1e-5
    )
    assert row[5].strip() == f"{ok.size}/{kept.size}"
    return report


def test_finalize_writes_plots_and_a_consistent_report(tmp_path):
    history = _log_run(tmp_path / "reports")
    logged = {k: np.asarray(v) for k, v in history.history.items()}
    outdir = tmp_path / "out"
    history.finalize(outdir=outdir, warmup=0.1)
    report = _check_outdir(outdir, logged, 0.1)
    assert '"lr": 0.01' in report
    assert "](eval.h5)" in report and "](train.h5)" in report


def test_offline_report_from_the_jsonl_of_a_killed_run(tmp_path):
    report_dir = tmp_path / "reports"
    history = _log_run(report_dir)
    logged = {k: np.asarray(v) for k, v in history.history.items()}
    jsonl = Path(history.jsonl_path)
    del history  # killed: finalize never ran
    assert jsonl.is_file()
    outdir = tmp_path / "rebuilt"
    done = subprocess.run(
        [sys.executable, "-m", "ezpz.cli", "report", str(jsonl), "--outdir", str(outdir)]
        + ["--warmup", "0.25"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    _check_outdir(outdir, logged, 0.25)
