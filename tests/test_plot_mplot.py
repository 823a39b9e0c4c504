"""Matplotlib plots of a finalize group: files, what is drawn, warmup, no leaked figures."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from test_plot_datasets import make_group  # noqa: E402

from ezpz.plot import metric_layout, x_values  # noqa: E402
from ezpz.plot.mplot import (  # noqa: E402
    MAX_POINTS,
    ScalarCanvas,
    _new_figure,
    plot_group,
    plot_vector,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0, "an image with something drawn on it"


def _metric(ds, base):
    return next(m for m in metric_layout(ds) if m.base == base)


def _draw(ds, base, start=0, canvas=None):
    """Draw one metric on a (possibly reused) canvas; return its axes' visible lines."""
    canvas = canvas or ScalarCanvas()
    canvas.draw(ds, _metric(ds, base), group="train", start=start, x=x_values(ds))
    return canvas, [line for line in canvas.ax.lines if line.get_visible()]


def test_one_png_per_metric_under_the_group_dir(tmp_path):
    ds = make_group(300, vectors={"chains": np.random.default_rng(0).normal(size=(300, 6))})
    paths = plot_group(ds, tmp_path, group="train", warmup=0.1)
    assert [p.name for p in paths] == ["loss.png", "acc.png", "chains.png"]
    for p in paths:
        assert p.parent == tmp_path / "plots" / "mplot" / "train"
        _assert_png(p)


def test_unprefixed_group_goes_to_history_dir(tmp_path):
    ds = make_group(20, group="", stats=False)
    paths = plot_group(ds, tmp_path, group="")
    assert {p.parent for p in paths} == {tmp_path / "plots" / "mplot" / "history"}
    assert len(paths) == 2


def test_stats_draw_bands_and_mean_raw_only_draws_a_line():
    ds = make_group(100)
    canvas, lines = _draw(ds, "loss")
    ax = canvas.ax
    assert [line.get_label() for line in lines] == ["rank 0", "mean"]
    assert len(ax.collections) == 2, "min..max band and mean +- std band"
    assert ax.get_title() == "train/loss"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "min..max",
        "mean ± std",
        "rank 0",
        "mean",
    ]
    # the min..max band spans exactly the logged min and max, and the y range holds it
    band_y = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(band_y.min(), ds["loss_min"].values.min())
    assert np.isclose(band_y.max(), ds["loss_max"].values.max())
    ylo, yhi = ax.get_ylim()
    assert ylo < ds["loss_min"].values.min() and yhi > ds["loss_max"].values.max()

    # the same canvas, reused for a metric without statistics: no bands, no legend left over
    plain = make_group(100, stats=False, metrics={"lr": np.linspace(0, 1, 100)})
    _, lines = _draw(plain, "lr", canvas=canvas)
    assert len(lines) == 1 and len(canvas.ax.collections) == 0
    assert canvas.ax.get_legend() is None and canvas.ax.get_title() == "train/lr"
    np.testing.assert_array_equal(lines[0].get_ydata(), plain["lr"].values)
    assert canvas.ax.get_xlim() == (0.0, 99.0)


@pytest.mark.parametrize(("warmup", "first"), [(0.0, 0), (0.1, 20), (0.25, 50), (50, 50), (7, 7)])
def test_warmup_fraction_or_count_drops_leading_draws(warmup, first):
    from ezpz.plot import warmup_start

    ds = make_group(200, stats=False, step0=1000)
    start = warmup_start(200, warmup)
    assert start == first
    _, (line,) = _draw(ds, "loss", start=start)
    xdata = line.get_xdata()
    assert xdata[0] == 1000 + first and xdata.size == 200 - first


def test_warmup_that_would_drop_everything_keeps_one_sample():
    from ezpz.plot import warmup_start

    assert warmup_start(10, 500) == 9
    assert warmup_start(0, 0.5) == 0
    with pytest.raises(ValueError):
        warmup_start(10, -1)


def test_long_series_is_decimated_but_keeps_its_spike():
    n = 1_000_000
    loss = np.random.default_rng(3).standard_normal(n)
    loss[654_321] = 1e3
    ds = make_group(n, metrics={"loss": loss})
    _, (raw, mean) = _draw(ds, "loss")
    assert raw.get_xdata().size <= MAX_POINTS + 2 and mean.get_xdata().size <= MAX_POINTS + 2
    assert raw.get_ydata().max() == 1e3 and 654_321 in raw.get_xdata()


def test_vector_ridge_plot_is_capped_at_num_chains():
    from matplotlib.collections import LineCollection

    ds = make_group(
        120, stats=False, vectors={"chains": np.random.default_rng(4).normal(size=(120, 40))}
    )
    fig = _new_figure((12, 5))
    plot_vector(
        fig, ds, _metric(ds, "chains"), group="train", start=0, x=x_values(ds), num_chains=16
    )
    ax_trace, ax_ridge = fig.axes
    (traces,) = [c for c in ax_trace.collections if isinstance(c, LineCollection)]
    assert len(traces.get_segments()) == 16
    assert "16 of 40 chains" in fig.get_suptitle()
    assert len(ax_ridge.collections) in range(2, 13), "one filled ridge per sampled draw"


def test_awkward_values_still_give_a_png(tmp_path):
    n = 50
    nan = np.full(n, np.nan)
    spiky = np.linspace(0, 1, n)
    spiky[[3, 9]] = [np.inf, -np.inf]
    ds = make_group(
        n,
        stats=False,
        metrics={"all_nan": nan, "with_inf": spiky, "a/b": np.ones(n), "a-b": np.zeros(n)},
        vectors={"empty_chains": np.full((n, 3), np.nan)},
    )
    paths = plot_group(ds, tmp_path, group="odd")
    names = [p.name for p in paths]
    assert names == ["all_nan.png", "with_inf.png", "a-b.png", "a-b-2.png", "empty_chains.png"]
    for p in paths:
        _assert_png(p)
    single = make_group(1, stats=True)
    for p in plot_group(single, tmp_path / "one", group="train"):
        _assert_png(p)


def test_metric_with_only_cross_rank_statistics_is_plotted(tmp_path):
    ds = make_group(30).drop_vars(["loss", "acc"])
    paths = plot_group(ds, tmp_path, group="train")
    assert [p.name for p in paths] == ["loss.png", "acc.png"]


def test_rerun_replaces_and_removes_stale_plots(tmp_path):
    ds = make_group(40)
    first = plot_group(ds, tmp_path, group="train")
    stale = first[0].parent / "old_metric.png"
    stale.write_bytes(PNG_MAGIC)
    second = plot_group(
        ds.drop_vars(["acc", "acc_mean", "acc_min", "acc_max", "acc_std"]), tmp_path, group="train"
    )
    assert [p.name for p in second] == ["loss.png"]
    assert sorted(p.name for p in second[0].parent.iterdir()) == ["loss.png"]


def test_num_chains_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="num_chains"):
        plot_group(make_group(5), tmp_path, group="train", num_chains=0)


def test_no_figure_is_left_alive(tmp_path):
    from matplotlib.figure import Figure

    ds = make_group(100, vectors={"chains": np.zeros((100, 4))})
    plot_group(ds, tmp_path, group="warm")  # first call may cache fonts etc.
    gc.collect()
    before = sum(isinstance(o, Figure) for o in gc.get_objects())
    plot_group(ds, tmp_path, group="train")
    gc.collect()
    after = sum(isinstance(o, Figure) for o in gc.get_objects())
    assert after == before


def test_pyplot_and_the_users_backend_are_left_alone(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import matplotlib
        matplotlib.use("svg")  # the user's choice, which plotting must not switch
        from test_plot_datasets import make_group
        from ezpz.plot.mplot import plot_group
        paths = plot_group(make_group(30), {str(tmp_path)!r}, group="train")
        assert len(paths) == 2, paths
        assert "matplotlib.pyplot" not in sys.modules
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_one_failing_metric_does_not_cost_the_others(tmp_path, monkeypatch, caplog):
    import logging

    from ezpz.plot import mplot

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(mplot, "plot_vector", broken)
    ds = make_group(30, vectors={"chains": np.zeros((30, 2))})
    with caplog.at_level(logging.ERROR, logger="ezpz.plot.mplot"):
        paths = plot_group(ds, tmp_path, group="train")
    assert [p.name for p in paths] == ["loss.png", "acc.png"]
    assert "could not plot train/chains" in caplog.text


def test_variables_that_are_not_time_series_are_skipped(tmp_path):
    ds = make_group(10, stats=False)
    ds["cube"] = (("draw", "a", "b"), np.zeros((10, 2, 2)))
    ds["scalar"] = ((), 1.0)
    assert [m.base for m in metric_layout(ds)] == ["loss", "acc"]
    assert len(plot_group(ds, tmp_path, group="train")) == 2
