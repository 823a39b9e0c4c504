"""report.md: links resolve, plots inline, statistics after warmup, no secrets, re-runs replace."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("plotext")
from test_plot_datasets import make_group  # noqa: E402

from ezpz.history.report import metric_summary, redact, write_report  # noqa: E402
from ezpz.plot import mplot, tplot  # noqa: E402

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _build(outdir: Path, datasets: dict, warmup: float = 0.0, **kwargs) -> Path:
    mplots = {g: mplot.plot_group(ds, outdir, group=g, warmup=warmup) for g, ds in datasets.items()}
    tplots = {g: tplot.plot_group(ds, outdir, group=g, warmup=warmup) for g, ds in datasets.items()}
    args = {"meta": {"run_id": "run-123", "world_size": 4}, "config": {"lr": 0.001}}
    args.update(kwargs)
    return write_report(
        outdir, datasets=datasets, mplots=mplots, tplots=tplots, warmup=warmup, **args
    )


def _table_row(report: str, metric: str) -> list[str]:
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == metric:
            return cells
    raise AssertionError(f"no table row for {metric}")


@pytest.fixture
def three_groups():
    return {
        "train": make_group(300, group="train", vectors={"chains": np.ones((300, 4))}),
        "eval": make_group(40, group="eval", stats=False, step0=1000),
        "": make_group(25, group="", stats=False, metrics={"lr": np.linspace(1, 0, 25)}),
    }


def test_every_link_resolves_and_every_plot_is_in(tmp_path, three_groups):
    outdir = tmp_path / "out"
    (outdir).mkdir()
    (outdir / "train.h5").write_bytes(b"\x89HDF")  # finalize's data files get linked too
    (outdir / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "run.jsonl").write_text("{}\n")
    (outdir / "2026-01-01-000000-rank0.jsonl").symlink_to(tmp_path / "logs" / "run.jsonl")
    report_path = _build(outdir, three_groups)
    assert report_path == outdir / "report.md"
    report = report_path.read_text(encoding="utf-8")
    links = LINK.findall(report)
    assert links, "the report links its outputs"
    for link in links:
        assert not link.startswith("/"), f"{link} is not relative"
        assert (outdir / unquote(link)).is_file(), f"{link} does not resolve"
    pngs = sorted((outdir / "plots" / "mplot").rglob("*.png"))
    txts = sorted((outdir / "plots" / "tplot").rglob("*.txt"))
    assert len(pngs) == 3 + 2 + 1 and len(txts) > 20
    linked = {(outdir / unquote(link)).resolve() for link in links}
    assert {p.resolve() for p in pngs} <= linked
    assert {(outdir / n).resolve() for n in ("train.h5", "metrics.jsonl")} <= linked
    # the log link is linked as itself, so the report survives copying outdir
    assert "](2026-01-01-000000-rank0.jsonl)" in report
    for png in pngs:
        assert f"![{png.stem}]({png.relative_to(outdir).as_posix()})" in report
    for txt in txts:  # terminal plots inline, in code fences
        assert f"```\n{txt.read_text(encoding='utf-8').rstrip()}\n```" in report


def test_links_resolve_when_paths_are_relative_and_odd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outdir = Path("runs/my run")  # relative, with a space
    ds = {"train set": make_group(20, group="train set", stats=False)}
    report = _build(outdir, ds).read_text(encoding="utf-8")
    links = LINK.findall(report)
    assert any("plots/mplot/train_set/" in link for link in links), "safe group dir name"
    for link in links:
        assert (tmp_path / outdir / unquote(link)).is_file(), link


def test_metric_table_is_over_the_draws_after_warmup(tmp_path):
    n = 200
    loss = np.random.default_rng(5).normal(size=n)
    loss[:20] = 1e6  # warmup junk that must not reach the statistics
    loss[50] = np.nan
    loss[60] = np.inf
    ds = {"train": make_group(n, metrics={"loss": loss})}
    report = _build(tmp_path, ds, warmup=0.1).read_text(encoding="utf-8")
    kept = loss[20:]
    ok = kept[np.isfinite(kept)]
    cells = _table_row(report, "train/loss")
    assert [float(c) for c in cells[1:6]] == pytest.approx(
        [kept[-1], ok.min(), ok.max(), ok.mean(), ok.std()], rel=1e-5
    )
    assert cells[6] == f"{ok.size}/{kept.size}" == "178/180"
    assert "warmup=0.1 dropped 20" in report

    report = _build(tmp_path, ds, warmup=30).read_text(encoding="utf-8")
    cells = _table_row(report, "train/loss")
    assert cells[6] == "168/170" and "warmup=30 dropped 30" in report


def test_metric_summary_edge_cases():
    s = metric_summary(np.array([np.nan, np.nan]))
    assert s["finite"] == 0 and np.isnan(s["min"]) and np.isnan(s["last"])
    s = metric_summary(np.array([1.0, 3.0, np.nan]))
    assert np.isnan(s["last"]), "last is what was logged last, even NaN"
    assert (s["min"], s["max"], s["mean"], s["std"]) == (1.0, 3.0, 2.0, 1.0)
    s = metric_summary(np.array([[1.0, 3.0], [5.0, np.nan]]))  # vector: [draw, chain]
    assert s["last"] == 5.0 and s["finite"] == 3 and s["max"] == 5.0


def test_no_secret_reaches_the_report(tmp_path, monkeypatch):
    secrets = {
        "EZPZ_API_KEY": "s3cr3t-env-key",
        "EZPZ_AUTH_TOKEN": "s3cr3t-env-token",
        "AMSC_API_KEY": "s3cr3t-amsc",
        "MLFLOW_TRACKING_TOKEN": "s3cr3t-mlflow",
        "WANDB_API_KEY": "s3cr3t-wandb",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cr3t-uri-pass@mlflow.example/x")
    monkeypatch.setenv("EZPZ_TPLOT_MARKER", "hd")
    monkeypatch.setattr(
        sys, "argv", ["train.py", "--api-key", "s3cr3t-arg", "--db-password=s3cr3t-eq", "lr=1"]
    )
    config = {
        "lr": 0.1,
        "wandb": {"api_key": "s3cr3t-config", "project": "demo"},
        "servers": [{"password": "s3cr3t-list"}],
    }
    meta = {"run_id": "r1", "mlflow_token": "s3cr3t-meta", "world_size": 2}
    report = _build(tmp_path, {"train": make_group(20)}, meta=meta, config=config).read_text(
        encoding="utf-8"
    )
    assert "s3cr3t" not in report
    # what is not secret is still there
    assert "EZPZ_TPLOT_MARKER" in report and "| hd |" in report
    assert "https://***@mlflow.example/x" in report
    assert '"project": "demo"' in report and '"api_key": "<redacted>"' in report
    assert "train.py --api-key <redacted> --db-password=<redacted> lr=1" in report
    assert "| world_size | 2 |" in report


def test_redact_keeps_structure():
    assert redact({"a": {"Secret_Thing": 1, "b": [1, "x"]}}) == {
        "a": {"Secret_Thing": "<redacted>", "b": [1, "x"]}
    }


def test_report_sections_and_groups(tmp_path, three_groups):
    meta = {"run_id": "run-123", "run_name": "my-run", "world_size": 4}
    report = _build(tmp_path, three_groups, meta=meta).read_text(encoding="utf-8")
    assert report.startswith("# ezpz run report: my-run\n")
    for section in ("## Run", "## Environment", "## Config", "## Metrics", "## Plots"):
        assert f"\n{section}\n" in report
    assert "### history (unprefixed metrics)" in report
    assert _table_row(report, "lr")[1] == "0"
    assert _table_row(report, "eval/acc")
    assert _table_row(report, "train/chains (4 chains)")[1] == "1"
    assert '"lr": 0.001' in report


def test_rerun_replaces_the_report(tmp_path):
    _build(tmp_path, {"train": make_group(20, metrics={"old_metric": np.ones(20)})})
    report = _build(tmp_path, {"train": make_group(20)}).read_text(encoding="utf-8")
    assert "old_metric" not in report
    assert report.count("# ezpz run report") == 1
    assert not list(tmp_path.glob(".report.md.*")), "no temporary file left behind"
