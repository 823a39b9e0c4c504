"""``ezpz-history compare``: table values against numpy, PNGs, compare.md, plotext overlays."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_runs import CLI, RUN_A, RUN_B, write_run_a, write_run_b  # noqa: I001

from ezpz.runs.compare import (
    compare_table,
    higher_is_better,
    load_series,
    metric_keys,
    shared_keys,
)
from ezpz.runs.locate import resolve_run
from ezpz.runs.records import read_log, to_float


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=240)


def _column(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in read_log(path).rows if key in r]
    steps = np.array([r["_step"] for r in rows])
    values = np.array([to_float(r[key]) for r in rows], dtype=float)
    return steps, values


@pytest.fixture
def runs(tmp_path) -> tuple[Path, Path]:
    return write_run_a(tmp_path / "a"), write_run_b(tmp_path / "b")


def test_table_values_match_numpy(runs):
    a, b = runs
    loaded = [load_series(resolve_run(a)), load_series(resolve_run(b))]
    keys = metric_keys(loaded)
    assert "train/loss/mean" not in keys and "train/chains" not in keys  # stats, vectors
    assert set(keys) == {"train/loss", "train/acc", "lr", "eval/acc", "train/gnorm"}
    assert shared_keys(loaded, keys) == ["train/loss", "train/acc"]
    table = compare_table(loaded, keys)
    for key in keys:
        first_last = None
        for i, path in enumerate(runs):
            steps, values = _column(path, key)
            cell = table[key][i]
            if values.size == 0:
                assert cell is None
                continue
            tail = values[-math.ceil(0.1 * values.size) :]
            assert cell.last == values[-1]
            assert cell.min == np.nanmin(values)
            best = np.nanmax(values) if higher_is_better(key) else np.nanmin(values)
            assert cell.best == best
            assert cell.tail_mean == pytest.approx(np.nanmean(tail))
            assert cell.points == values.size
            if i == 0:
                first_last = values[-1]
                assert cell.delta is None
            elif first_last is None:  # the first run lacks the metric
                assert cell.delta is None
            else:
                assert cell.delta == pytest.approx(values[-1] - first_last)
    assert table["train/acc"][0].best == pytest.approx(99 / 120)  # accuracy: max, NaN left out
    assert table["train/loss"][1].best == pytest.approx(1.5 / 150)  # loss: min
    assert table["train/gnorm"][0] is None and table["eval/acc"][1] is None


def test_cli_writes_markdown_and_pngs(runs, tmp_path):
    from PIL import Image

    out = tmp_path / "cmp"
    proc = _cli("compare", str(runs[0]), str(runs[1]), "--outdir", str(out), "--width", "80")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert re.search(r"^train/loss\s+baseline\s+0\.02\s", text, flags=re.MULTILINE)
    assert RUN_B in text and "mean last 10%" in text
    assert "┌" in text and "train/loss" in text  # the plotext overlay
    md = (out / "compare.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == ["plots/train_acc.png", "plots/train_loss.png"]
    for link in links:
        with Image.open(out / link) as img:
            img.load()
            assert img.size[0] > 100 and img.size[1] > 100
    import matplotlib.image

    assert matplotlib.image.imread(out / links[0]).ndim == 3
    assert "| train/gnorm | baseline | - |" in md


def test_metrics_filter_and_three_runs(runs, tmp_path):
    c = write_run_a(tmp_path / "c", steps=20)
    proc = _cli(
        "compare", str(runs[0]), str(runs[1]), str(c), "--metrics", "train/loss", "--no-tplot"
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 2 + 3  # header, rule, one row per run
    assert "train/acc" not in proc.stdout
    missing = _cli("compare", str(runs[0]), str(runs[1]), "--metrics", "nope")
    assert missing.returncode == 1 and "nope" in missing.stderr


def test_bad_input(runs, tmp_path):
    proc = _cli("compare", str(runs[0]), str(tmp_path / "missing.jsonl"))
    assert proc.returncode == 2 and "no run" in proc.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = _cli("compare", str(runs[0]), str(empty))
    assert proc.returncode == 1 and "empty" in proc.stderr and "Traceback" not in proc.stderr


def test_run_id_lookup(tmp_path):
    write_run_a(tmp_path / "hist")
    write_run_b(tmp_path / "hist")
    proc = _cli("compare", RUN_A, RUN_B, "--report-dir", str(tmp_path / "hist"), "--no-tplot")
    assert proc.returncode == 0, proc.stderr
    assert "baseline" in proc.stdout and RUN_B in proc.stdout


def test_resumed_segment_supersedes_earlier_steps(tmp_path):
    """A run restarted from an older checkpoint: its re-recorded steps replace the old ones."""
    import json

    path = tmp_path / "2026-01-05-120000-eeeeee.jsonl"
    lines = [{"_event": "start", "_time": 0.0, "run_id": path.stem, "resumed": False}]
    lines += [{"_step": i, "_time": float(i), "loss": 1.0} for i in range(10)]
    lines.append({"_event": "interrupted", "_time": 10.0, "signal": "SIGTERM"})
    lines.append({"_event": "start", "_time": 11.0, "run_id": path.stem, "resumed": True})
    lines += [{"_step": i, "_time": 12.0 + i, "loss": 2.0} for i in range(6, 12)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    series = load_series(resolve_run(path)).metrics["loss"]
    assert series.steps.tolist() == list(range(12))
    assert series.values.tolist() == [1.0] * 6 + [2.0] * 6
