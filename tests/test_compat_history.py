"""History's ezpz 0.26 names (issue 13): data, groups, datasets, plots, summarize, finalize keywords."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import xarray as xr

from ezpz.history import History
from ezpz.history.compat import HistoryCompat


def _run(tmp_path, steps=12, **kw):
    hist = History(report_dir=tmp_path / "rep", backends="none", **kw)
    for i in range(steps):
        metrics = {"train/loss": 1.0 / (i + 1), "train/chains": np.arange(3.0) + i, "lr": 0.1}
        hist.update(metrics, step=i)
        if i % 3 == 0:
            hist.update({"eval/acc": i / steps}, step=i)
    return hist


def test_history_has_the_mixin():
    assert issubclass(History, HistoryCompat)


def test_data_and_groups_mid_run(tmp_path):
    hist = _run(tmp_path)
    assert list(hist.data) == list(hist.history)
    np.testing.assert_array_equal(hist.data["train/loss"], hist.history["train/loss"])
    groups = hist.groups
    assert set(groups) == {"train", "", "eval"}
    np.testing.assert_array_equal(groups["train"]["loss"], 1.0 / np.arange(1, 13))
    assert groups["train"]["chains"].shape == (12, 3)
    assert groups[""]["lr"].tolist() == [0.1] * 12
    assert len(groups["eval"]["acc"]) == 4  # own length, no padding
    hist.update({"train/loss": 0.0}, step=12)
    assert len(hist.groups["train"]["loss"]) == 13  # readable again later
    assert not (tmp_path / "rep" / hist.run_id).exists()  # reading writes nothing


def test_grouped_datasets_are_finalizes_datasets(tmp_path):
    hist = _run(tmp_path)
    grouped = hist.get_grouped_datasets()
    assert set(grouped) == {"train", "", "eval"}
    assert grouped["eval"].sizes["draw"] == 4 and grouped["train"].sizes["draw"] == 12
    assert not (tmp_path / "rep" / hist.run_id).exists()  # nothing written mid-run
    warm = hist.get_grouped_datasets(warmup=0.5)
    assert warm["train"].sizes["draw"] == 6 and warm["eval"].sizes["draw"] == 2
    assert warm["train"]["step"].values.tolist() == list(range(6, 12))
    result = hist.finalize(outdir=tmp_path / "out", plot=False)
    for group, ds in result.items():
        xr.testing.assert_identical(
            ds.drop_attrs(), grouped[group].drop_attrs()
        )  # same data, same layout


def test_get_dataset_is_flat(tmp_path):
    hist = _run(tmp_path)
    ds = hist.get_dataset()
    assert {"train_loss", "train_chains", "lr", "eval_acc"} <= set(ds.data_vars)
    assert ds["train_loss"].attrs["full_key"] == "train/loss"
    # train and "" share their steps: one draw axis; eval keeps its own, no NaN padding
    assert ds["train_loss"].dims == ("draw",) and ds["lr"].dims == ("draw",)
    assert ds["eval_acc"].dims == ("eval_draw",) and ds.sizes["eval_draw"] == 4
    assert ds["eval_step"].values.tolist() == [0, 3, 6, 9]
    assert not np.isnan(ds["eval_acc"].values).any()
    assert hist.get_dataset(warmup=3).sizes["draw"] == 9
    own = hist.get_dataset(data={"a": [1.0, 2.0, 3.0, 4.0], "b/c": [np.ones(2)] * 4}, warmup=0.25)
    assert own["a"].values.tolist() == [2.0, 3.0, 4.0]
    assert own["b_c"].dims == ("chain", "draw")


def test_to_dataarray_layouts(tmp_path):
    hist = History(report_dir=tmp_path, backends="none")
    one = hist.to_DataArray([1.0, 2.0, 3.0, 4.0], warmup=0.5)
    assert one.dims == ("draw",) and one.values.tolist() == [3.0, 4.0]
    two = hist.to_DataArray(np.arange(12.0).reshape(4, 3))  # [draws, chains]
    assert two.dims == ("chain", "draw") and two.shape == (3, 4)
    three = hist.to_DataArray(np.zeros((5, 2, 3)))
    assert three.dims == ("chain", "leapfrog", "draw") and three.shape == (3, 2, 5)
    torch = pytest.importorskip("torch")
    assert hist.to_DataArray([torch.tensor(1.0), torch.tensor(2.0)]).values.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError):
        hist.to_DataArray(np.zeros((2, 2, 2, 2)))


def test_summarize_false_returns_empty_and_records(tmp_path):
    hist = History(report_dir=tmp_path, backends="none")
    assert hist.update({"loss": 0.5}, summarize=False) == ""
    assert hist.update({"loss": 0.25}) == "loss=0.250000"
    assert hist.history["loss"].tolist() == [0.5, 0.25]
    lines = hist.jsonl_path.read_text().splitlines()
    assert sum('"loss"' in line for line in lines) == 2  # the JSONL line is still written


def test_summarize_false_skips_the_formatter(tmp_path, monkeypatch):
    hist = History(report_dir=tmp_path, backends="none")

    def boom(*a, **k):
        raise AssertionError("summary built")

    monkeypatch.setattr(hist._summary, "format", boom)
    assert hist.update({"loss": 1.0}, summarize=False) == ""


def test_plot_all_and_tplot_all_write_finalizes_plots_and_the_report(tmp_path):
    hist = _run(tmp_path)
    out = tmp_path / "mid"
    mplots = hist.plot_all(outdir=out, title="mid-run", warmup=0.25)
    assert {p.name for p in mplots["train"]} == {"loss.png", "chains.png"}
    assert all(p.parent == out / "plots" / "mplot" / "eval" for p in mplots["eval"])
    report = (out / "report.md").read_text()
    assert "plots/mplot/train/loss.png" in report and "## Terminal plots" not in report
    tplots = hist.tplot_all(outdir=out, plot_type="hist")
    assert (out / "plots" / "tplot" / "train" / "loss.txt").read_text().count("(n=12)") >= 1
    report = (out / "report.md").read_text()
    assert "plots/mplot/train/loss.png" in report and "plots/tplot/train/loss.txt" in report
    # the same files finalize writes into the same outdir
    final = hist.finalize(outdir=out)
    assert set(final) == {"train", "", "eval"}
    for paths in tplots.values():
        assert all(p.exists() for p in paths)
    assert {p.name for p in (out / "plots" / "mplot" / "train").glob("*.png")} == {
        "loss.png",
        "chains.png",
    }


def test_tplot_all_append_and_xkey(tmp_path):
    hist = _run(tmp_path)
    out = tmp_path / "t"
    hist.tplot_all(outdir=out)
    path = out / "plots" / "tplot" / "train" / "loss.txt"
    first = path.read_text()
    hist.tplot_all(outdir=out, append=True)
    assert path.read_text() == first + first
    hist.tplot_all(outdir=out)  # default: replace
    assert path.read_text() == first
    hist.tplot_all(outdir=out, xkey="train/loss")
    assert not path.exists()


def test_plot_default_outdir_and_other_ranks(tmp_path):
    hist = _run(tmp_path)
    path = hist.plot(np.linspace(0, 1, 20), key="lr_sched", title="schedule")
    assert path == tmp_path / "rep" / hist.run_id / "plots" / "mplot" / "lr_sched.png"
    assert path.stat().st_size > 0
    ridge = hist.plot(np.random.default_rng(0).normal(size=(30, 8)), key="q", outdir=tmp_path / "p")
    assert ridge.exists()
    hist.rank = 1  # other ranks write nothing
    assert hist.plot([1.0, 2.0], key="x", outdir=tmp_path / "r1") is None
    assert (
        hist.plot_all(outdir=tmp_path / "r1") == {} and hist.tplot_all(outdir=tmp_path / "r1") == {}
    )
    assert not (tmp_path / "r1").exists()
    hist.rank = 0


def test_log_metrics_one_info_line(tmp_path, caplog):
    hist = History(report_dir=tmp_path, backends="none")
    caplog.set_level(logging.DEBUG, logger="ezpz.history")
    line = hist.log_metrics({"loss": 0.5, "loss/std": 0.01, "hist/w": 1.0}, precision=3)
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    debugs = [
        r for r in caplog.records if r.levelno == logging.DEBUG and "hist/w" in r.getMessage()
    ]
    assert [r.getMessage() for r in infos] == [line] and line == "loss=0.500(± 0.010)"
    assert len(debugs) == 1
    assert hist.log_metrics({"loss": 0.5, "loss/std": 0.01}, include_summary=False) == (
        "loss=0.500000"
    )
    assert hist.history == {} or len(hist.history) == 0  # log_metrics records nothing


def test_finalize_save_false_writes_no_datasets(tmp_path):
    hist = _run(tmp_path)
    out = tmp_path / "out"
    result = hist.finalize(outdir=out, save=False)
    assert set(result) == {"train", "", "eval"}
    assert not list(out.glob("*.h5"))
    assert (out / "report.md").exists() and list((out / "plots" / "mplot").rglob("*.png"))


def test_finalize_keywords_are_honoured(tmp_path, caplog):
    hist = _run(tmp_path)
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="ezpz.history.finalize")
    hist.finalize(
        outdir=out,
        dataset_fname="dataset",
        title="My run",
        tplot_type="hist",
        env_info={"Cluster": {"name": "polaris", "api_key": "hunter2"}, "queue": "debug"},
        verbose=True,
        timings=False,
    )
    assert sorted(p.name for p in out.glob("*.h5")) == [
        "dataset-eval.h5",
        "dataset-train.h5",
        "dataset.h5",
    ]
    assert "(n=12)" in (out / "plots" / "tplot" / "train" / "loss.txt").read_text()
    report = (out / "report.md").read_text()
    assert "| Cluster: name | polaris |" in report and "| queue | debug |" in report
    assert "hunter2" not in report
    text = caplog.text
    assert not re.search(r"finalize \[\d/\d\] mplot", text)  # timings=False
    assert "finalize: wrote" in text and "plots/mplot/train/loss.png" in text  # verbose
    assert "ignoring unknown arguments" not in text


def test_finalize_plot_false_and_append_tplot(tmp_path):
    hist = _run(tmp_path)
    out = tmp_path / "out"
    hist.tplot_all(outdir=out)
    path = out / "plots" / "tplot" / "train" / "loss.txt"
    before = path.read_text()
    hist.finalize(outdir=out, append_tplot=True, dataset_fname="one")
    assert path.read_text().startswith(before) and len(path.read_text()) > len(before)
    assert (out / "one-train.h5").exists()

    other = _run(tmp_path / "b")
    out2 = tmp_path / "out2"
    other.finalize(outdir=out2, plot=False)
    assert not (out2 / "plots").exists() or not list((out2 / "plots").rglob("*.*"))


def test_finalize_title_reaches_the_pngs(tmp_path, monkeypatch):
    seen: list[str | None] = []
    from ezpz.plot import mplot

    real = mplot.plot_group

    def spy(ds, outdir, **kw):
        seen.append(kw.get("title"))
        return real(ds, outdir, **kw)

    monkeypatch.setattr(mplot, "plot_group", spy)
    hist = _run(tmp_path)
    hist.finalize(outdir=tmp_path / "out", title="T1")
    assert seen and set(seen) == {"T1"}


def test_single_group_dataset_fname(tmp_path):
    hist = History(report_dir=tmp_path / "rep", backends="none")
    for i in range(4):
        hist.update({"loss": float(i)})
    hist.finalize(outdir=tmp_path / "out", dataset_fname="dataset.h5", plot=False)
    assert [p.name for p in (tmp_path / "out").glob("*.h5")] == ["dataset.h5"]
