"""Terminal (plotext) plots of a finalize group: files, variants, markers, plot type."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

pytest.importorskip("plotext")
from test_plot_datasets import make_group  # noqa: E402

from ezpz.plot import tplot  # noqa: E402
from ezpz.plot.tplot import plot_group  # noqa: E402

BRAILLE = re.compile("[\u2801-\u28ff]")
HD_BLOCKS = re.compile("[▖▗▘▝▚▞▙▛▜▟]")


@pytest.fixture(autouse=True)
def _default_env(monkeypatch):
    monkeypatch.delenv("EZPZ_TPLOT_MARKER", raising=False)
    monkeypatch.delenv("EZPZ_TPLOT_TYPE", raising=False)
    tplot._warned.clear()


def _texts(paths):
    return {p.name: p.read_text(encoding="utf-8") for p in paths}


def test_every_variant_is_written_readable_and_plain(tmp_path):
    ds = make_group(200)
    paths = plot_group(ds, tmp_path, group="train")
    texts = _texts(paths)
    expected = [
        f"{m}{s}.txt"
        for m in ("loss", "acc")
        for s in ("", "-mean", "-min", "-max", "-std", "-summary", "-hist")
    ]
    assert list(texts) == expected
    for p in paths:
        assert p.parent == tmp_path / "plots" / "tplot" / "train"
    for name, text in texts.items():
        assert text.strip(), name
        assert "\x1b" not in text, f"{name} holds ANSI codes"
        assert len(text.splitlines()) >= 15, name
        assert "┌" in text and "┘" in text, f"{name} is not a framed plot"
    assert "train/loss/std" in texts["loss-std.txt"]
    assert BRAILLE.search(texts["loss.txt"]), "braille is the default marker"


def test_summary_overlays_mean_min_max_and_raw(tmp_path):
    paths = plot_group(make_group(200), tmp_path, group="train")
    summary = _texts(paths)["loss-summary.txt"]
    title, *canvas = summary.splitlines()
    assert "· mean" in title and "- min" in title and "+ max" in title and "raw" in title
    body = "\n".join(line.split("┤", 1)[-1].split("│", 1)[-1] for line in canvas[1:-4])
    for char in "·-+":
        assert char in body, f"{char!r} missing from the overlay"
    assert BRAILLE.search(body), "the raw line"


def test_histogram_counts_every_value(tmp_path):
    paths = plot_group(make_group(200), tmp_path, group="train", warmup=0.25)
    hist = _texts(paths)["loss-hist.txt"]
    assert "(n=150)" in hist  # 200 draws minus 25 % warmup
    assert "█" in hist


def test_warmup_moves_the_x_axis(tmp_path):
    ds = make_group(200, stats=False, step0=0)
    text = _texts(plot_group(ds, tmp_path, group="train", warmup=100))["loss.txt"]
    ticks = text.splitlines()[-2].split()
    assert float(ticks[0]) == 100.0 and float(ticks[-1]) == 199.0


@pytest.mark.parametrize(("marker", "pattern"), [("hd", HD_BLOCKS), ("braille", BRAILLE)])
def test_marker_from_env(tmp_path, monkeypatch, marker, pattern):
    monkeypatch.setenv("EZPZ_TPLOT_MARKER", marker)
    text = _texts(plot_group(make_group(200, stats=False), tmp_path, group="t"))["loss.txt"]
    assert pattern.search(text)
    other = BRAILLE if pattern is HD_BLOCKS else HD_BLOCKS
    assert not other.search(text)


def test_single_character_marker(tmp_path, monkeypatch):
    monkeypatch.setenv("EZPZ_TPLOT_MARKER", "x")
    text = _texts(plot_group(make_group(50, stats=False), tmp_path, group="t"))["loss.txt"]
    assert text.count("x") > 20 and not BRAILLE.search(text)


def test_unknown_marker_falls_back_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EZPZ_TPLOT_MARKER", "no-such-marker")
    with caplog.at_level(logging.WARNING, logger="ezpz.plot.tplot"):
        paths = plot_group(make_group(50, stats=False), tmp_path, group="t")
    assert "EZPZ_TPLOT_MARKER='no-such-marker'" in caplog.text
    assert BRAILLE.search(_texts(paths)["loss.txt"])


def test_plot_type_hist_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EZPZ_TPLOT_TYPE", "hist")
    texts = _texts(plot_group(make_group(120), tmp_path, group="train"))
    for name in ("loss.txt", "loss-mean.txt", "loss-std.txt"):
        assert "(n=120)" in texts[name] and "█" in texts[name], name
    assert "· mean" in texts["loss-summary.txt"], "the overlay stays a line chart"


def test_unknown_plot_type_falls_back_to_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EZPZ_TPLOT_TYPE", "pie")
    with caplog.at_level(logging.WARNING, logger="ezpz.plot.tplot"):
        texts = _texts(plot_group(make_group(50), tmp_path, group="train"))
    assert "EZPZ_TPLOT_TYPE='pie'" in caplog.text
    assert "(n=" not in texts["loss.txt"] and BRAILLE.search(texts["loss.txt"])


def test_nothing_to_draw_still_writes_a_note(tmp_path):
    n = 30
    ds = make_group(
        n,
        stats=False,
        metrics={"all_nan": np.full(n, np.nan), "flat": np.full(n, 2.5)},
        vectors={"chains": np.random.default_rng(0).normal(size=(n, 5))},
    )
    texts = _texts(plot_group(ds, tmp_path, group="odd"))
    assert texts["all_nan.txt"] == "odd/all_nan: no finite values to plot\n"
    assert texts["flat-hist.txt"] == "odd/flat: all 30 values equal 2.5\n"
    assert "┌" in texts["flat.txt"], "a flat line is still a line plot"
    assert "mean over 5 chains" in texts["chains.txt"]
    assert "(n=150)" in texts["chains-hist.txt"], "every chain value in the histogram"
    assert all(t.strip() for t in texts.values())


def test_long_series_render_and_keep_spikes(tmp_path):
    n = 1_000_000
    loss = np.zeros(n)
    loss[123_456] = 500.0
    text = _texts(plot_group(make_group(n, metrics={"loss": loss}), tmp_path, group="t"))[
        "loss.txt"
    ]
    assert "500" in text, "the spike sets the y range"


def test_rerun_removes_stale_files_and_plotext_is_left_clear(tmp_path):
    import plotext

    first = plot_group(make_group(40), tmp_path, group="train")
    stale = first[0].parent / "gone.txt"
    stale.write_text("old")
    plot_group(make_group(40, stats=False), tmp_path, group="train")
    names = sorted(p.name for p in first[0].parent.iterdir())
    assert names == ["acc-hist.txt", "acc.txt", "loss-hist.txt", "loss.txt"]
    # the user's next plotext plot starts from a blank figure
    plotext.figure.plot_size(40, 10)
    blank = plotext.uncolorize(plotext.figure.build())
    assert not BRAILLE.search(blank)


def test_one_failing_metric_does_not_cost_the_others(tmp_path, monkeypatch, caplog):
    real = tplot._metric_plots

    def flaky(ds, metric, **kwargs):
        if metric.base == "loss":
            raise RuntimeError("boom")
        return real(ds, metric, **kwargs)

    monkeypatch.setattr(tplot, "_metric_plots", flaky)
    with caplog.at_level(logging.ERROR, logger="ezpz.plot.tplot"):
        paths = plot_group(make_group(30, stats=False), tmp_path, group="train")
    assert [p.name for p in paths] == ["acc.txt", "acc-hist.txt"]
    assert "train/loss" in caplog.text
