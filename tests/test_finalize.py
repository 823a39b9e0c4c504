"""finalize() end to end in one process: files, reopened datasets, uploads, re-runs."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from ezpz.history import History
from ezpz.tracker import Tracker, TrackerBackend


class Recorder(TrackerBackend):
    """A real backend (runs on the Tracker's worker thread) that keeps every call."""

    name = "recorder"

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple] = []
        self.fail_on = fail_on

    def _call(self, method: str, *args) -> None:
        self.calls.append((method, *args))
        if method == self.fail_on:
            raise RuntimeError(f"{method} is broken")

    def log(self, metrics, step=None, commit=True):
        self._call("log", dict(metrics), step)

    def log_config(self, config):
        self._call("log_config", dict(config))

    def finish(self):
        self._call("finish")

    def log_table(self, key, columns, rows):
        self._call("log_table", key, list(columns), [list(r) for r in rows])

    def log_image(self, key, path, caption=None):
        self._call("log_image", key, path)

    def log_artifact(self, path, name=None):
        self._call("log_artifact", path)

    def set_outdir(self, outdir):
        self._call("set_outdir", outdir)

    def of(self, method: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == method]


def _run(tmp_path: Path, steps: int = 60, tracker=None, **kw) -> History:
    hist = History(
        report_dir=tmp_path / "hist",
        backends="none" if tracker is None else None,
        tracker=tracker,
        config={"lr": 0.01, "model": {"depth": 2}},
        **kw,
    )
    for i in range(steps):
        metrics = {
            "train/loss": 1.0 / (i + 1),
            "train/acc": i / steps,
            "train/chains": np.linspace(0, 1, 4) * i,
        }
        if i == 7:
            metrics["train/loss"] = float("nan")
        if i == 8:
            metrics["train/acc"] = float("inf")
        hist.update(metrics, step=i)
        if i % 5 == 0:
            hist.update({"eval/loss": 2.0 / (i + 1)}, step=i)
    return hist


def _same(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # NaN == NaN here


def test_outputs_and_reopened_datasets_match_history(tmp_path):
    hist = _run(tmp_path)
    out = tmp_path / "out"
    result = hist.finalize(outdir=out, warmup=0.1)
    assert isinstance(result, dict) and set(result) == {"train", "eval"}
    assert result["train"].sizes["draw"] == 60 and result["eval"].sizes["draw"] == 12

    logged = hist.history
    for group, n in (("train", 60), ("eval", 12)):
        path = out / f"{group}.h5"
        with xr.open_dataset(path) as ds:
            ds.load()
            assert ds.sizes["draw"] == n  # own draw axis, no padding across groups
            xr.testing.assert_identical(ds, result[group])
            for var in ds.data_vars:
                _same(ds[var].values, logged[ds[var].attrs["full_key"]])
            assert ds.attrs["run_id"] == hist.run_id and ds.attrs["world_size"] == 1
            assert json.loads(ds.attrs["config"]) == {"lr": 0.01, "model": {"depth": 2}}
    with xr.open_dataset(out / "train.h5") as ds:
        assert ds["chains"].dims == ("draw", "chains_chain") and ds["chains"].shape == (60, 4)
        assert math.isnan(ds["loss"].values[7]) and math.isinf(ds["acc"].values[8])
        _same(ds["step"].values, np.arange(60))
    with xr.open_dataset(out / "eval.h5") as ds:
        _same(ds["step"].values, np.arange(0, 60, 5))

    # the logs: a copy of the JSONL and the structured-log link to the run's JSONL
    # the copy, then the run's "finalized" event (docs/restarts.md)
    copied = (out / "metrics.jsonl").read_bytes()
    rest = hist.jsonl_path.read_bytes()[len(copied) :]
    assert hist.jsonl_path.read_bytes().startswith(copied) and b'"finalized"' in rest
    links = [
        p for p in out.iterdir() if re.fullmatch(r"\d{4}-\d\d-\d\d-\d{6}-rank0\.jsonl", p.name)
    ]
    assert len(links) == 1 and links[0].is_symlink()
    assert links[0].resolve() == hist.jsonl_path.resolve()
    assert not os.path.isabs(os.readlink(links[0]))  # relative: survives moving the tree

    # plots and report exist and are non-empty; single process writes no ranks.h5
    pngs = sorted((out / "plots" / "mplot").rglob("*.png"))
    txts = sorted((out / "plots" / "tplot").rglob("*.txt"))
    assert pngs and txts and all(p.stat().st_size > 0 for p in pngs + txts)
    assert {p.parent.name for p in pngs} == {"train", "eval"}
    assert (out / "report.md").stat().st_size > 0
    assert not (out / "ranks.h5").exists()


def test_every_report_link_resolves(tmp_path):
    hist = _run(tmp_path, steps=30)
    out = tmp_path / "out"
    hist.finalize(outdir=out)
    text = (out / "report.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(t.endswith(".png") for t in targets)
    for target in targets:
        if "://" in target or target.startswith("#"):
            continue
        assert (out / target).exists(), target


def test_single_group_returns_a_dataset(tmp_path):
    hist = History(report_dir=tmp_path / "h", backends="none")
    for i in range(20):
        hist.update({"loss": float(i), "lr": 1e-3}, step=i)
    result = hist.finalize(outdir=tmp_path / "out", plot=False)
    assert isinstance(result, xr.Dataset)
    assert set(result.data_vars) == {"loss", "lr"} and result.attrs["group"] == ""
    with xr.open_dataset(tmp_path / "out" / "history.h5") as ds:
        xr.testing.assert_identical(ds.load(), result)


def test_outdir_defaults(tmp_path):
    hist = History(report_dir=tmp_path / "h", backends="none", outdir=tmp_path / "given")
    hist.update({"x": 1.0})
    hist.finalize(plot=False, report=False)
    assert (tmp_path / "given" / "history.h5").exists()

    hist = History(report_dir=tmp_path / "h", backends="none")
    hist.update({"x": 1.0})
    hist.finalize(plot=False, report=False)
    assert (tmp_path / "h" / hist.run_id / "history.h5").exists()


def test_rerun_into_same_outdir_replaces(tmp_path):
    out = tmp_path / "out"
    first = _run(tmp_path, steps=50)
    first.finalize(outdir=out, plot=False)
    (out / "notes.h5").write_bytes(b"not ours")  # a user's file must survive

    second = History(report_dir=tmp_path / "h2", backends="none")
    for i in range(5):
        second.update({"train/loss": float(i)}, step=i)
    second.finalize(outdir=out, plot=False)
    with xr.open_dataset(out / "train.h5") as ds:
        assert ds.sizes["draw"] == 5 and ds.attrs["run_id"] == second.run_id
        _same(ds["loss"].values, np.arange(5.0))
    # the first run's other group is another run's file: kept (issue 12 item 10),
    # its run_id tells it apart; only a run's own stale files are removed
    with xr.open_dataset(out / "eval.h5") as ds:
        assert ds.attrs["run_id"] == first.run_id
    assert (out / "notes.h5").read_bytes() == b"not ours"
    # the copy, then the run's "finalized" event (docs/restarts.md)
    copied = (out / "metrics.jsonl").read_bytes()
    rest = second.jsonl_path.read_bytes()[len(copied) :]
    assert second.jsonl_path.read_bytes().startswith(copied) and b'"finalized"' in rest
    assert len(list(out.glob("*-rank0.jsonl"))) == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_uploads_then_finish(tmp_path):
    rec = Recorder()
    hist = _run(tmp_path, steps=40, tracker=Tracker([rec]))
    out = tmp_path / "out"
    hist.finalize(outdir=out)
    methods = [c[0] for c in rec.calls]
    assert methods[-1] == "finish" and methods.count("finish") == 1
    assert rec.of("set_outdir") == [("set_outdir", str(out))]
    tables = {c[1]: c for c in rec.of("log_table")}
    assert set(tables) == {"training_history/train", "training_history/eval"}
    _, _, columns, rows = tables["training_history/train"]
    assert columns[:3] == ["step", "loss", "acc"] and len(rows) == 40
    assert rows[3][0] == 3 and rows[3][1] == pytest.approx(0.25)
    images = {c[1] for c in rec.of("log_image")}
    assert {"plots/train/loss", "plots/eval/loss"} <= images
    for _, _, path in rec.of("log_image"):
        assert Path(path).is_file()
    artifacts = {Path(c[1]).name for c in rec.of("log_artifact")}
    assert {"metrics.jsonl", "train.h5", "eval.h5", "report.md"} <= artifacts
    # everything uploaded came before finish
    assert methods.index("finish") > max(i for i, m in enumerate(methods) if m != "finish")


def test_failing_backend_and_plots_do_not_lose_datasets(tmp_path, monkeypatch):
    import ezpz.plot.mplot as mplot

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib exploded")

    monkeypatch.setattr(mplot, "plot_group", broken)
    rec = Recorder(fail_on="log_table")
    hist = _run(tmp_path, steps=20, tracker=Tracker([rec]))
    out = tmp_path / "out"
    result = hist.finalize(outdir=out)
    assert set(result) == {"train", "eval"}
    assert (out / "train.h5").exists() and (out / "report.md").exists()
    assert not (out / "plots" / "mplot").exists() or not list(
        (out / "plots" / "mplot").rglob("*.png")
    )
    assert [c[0] for c in rec.calls][-1] == "finish"


def test_history_table_row_cap(tmp_path, monkeypatch):
    monkeypatch.setenv("EZPZ_HISTORY_TABLE_ROWS", "7")
    rec = Recorder()
    hist = _run(tmp_path, steps=40, tracker=Tracker([rec]))
    hist.finalize(outdir=tmp_path / "out", plot=False)
    _, _, columns, rows = next(c for c in rec.of("log_table") if c[1] == "training_history/train")
    assert len(rows) == 7
    assert rows[0][0] == 0 and rows[-1][0] == 39  # first and last kept


@pytest.mark.parametrize("warmup", [-1, float("nan"), "5"])
def test_bad_warmup_is_a_clear_error(tmp_path, warmup):
    hist = _run(tmp_path, steps=3)
    with pytest.raises((ValueError, TypeError), match="warmup"):
        hist.finalize(outdir=tmp_path / "out", warmup=warmup)
    assert not (tmp_path / "out").exists()


def test_bad_num_chains_is_a_clear_error(tmp_path):
    hist = _run(tmp_path, steps=3)
    with pytest.raises(ValueError, match="num_chains"):
        hist.finalize(outdir=tmp_path / "out", num_chains=0)


def test_empty_history(tmp_path, caplog):
    hist = History(report_dir=tmp_path / "h", backends="none")
    result = hist.finalize(outdir=tmp_path / "out", plot=False)
    assert isinstance(result, xr.Dataset) and not result.data_vars
    assert "nothing was recorded" in caplog.text


def test_progress_lines(tmp_path, caplog):
    caplog.set_level("INFO", logger="ezpz.history.finalize")
    hist = _run(tmp_path, steps=10)
    hist.finalize(outdir=tmp_path / "out")
    stages = re.findall(r"finalize \[(\d)/8\] (\S+):", caplog.text)
    assert [s for _, s in stages] == [
        "ranks.h5",
        "datasets",
        "logs",
        "mplot",
        "tplot",
        "report",
        "upload",
        "finish",
    ]


def test_no_plots_flag(tmp_path):
    hist = _run(tmp_path, steps=10)
    hist.finalize(outdir=tmp_path / "out", plot=False)
    assert not (tmp_path / "out" / "plots").exists()
    assert (tmp_path / "out" / "report.md").exists()


def test_h5_datasets_have_ezpz_marker_attrs(tmp_path):
    hist = _run(tmp_path, steps=5)
    hist.finalize(outdir=tmp_path / "out", plot=False, report=False)
    with h5py.File(tmp_path / "out" / "train.h5") as f:
        assert "ezpz_version" in f.attrs and "draw" in f
