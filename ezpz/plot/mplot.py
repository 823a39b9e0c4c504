"""Matplotlib PNGs for one finalize group: ``{outdir}/plots/mplot/{group}/*.png``.

Per scalar metric one figure: the raw (rank 0) line, the cross-rank mean, a
min..max band and a mean +- std band when those statistics exist. Per vector
metric a ridge plot (distribution over chains at evenly spaced draws) beside
the chain traces, capped at ``num_chains``.

Why no pyplot: figures are built as ``matplotlib.figure.Figure`` on a
``FigureCanvasAgg`` directly, so nothing registers with pyplot's figure
manager, the user's backend is never switched, and every figure is freed as
soon as it goes out of scope. Long series are decimated with min/max
envelopes first, so drawing time depends on the figure width, not on the
number of steps.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ezpz.plot import (
    Metric,
    group_dirname,
    metric_layout,
    remove_stale,
    unique_stem,
    warmup_start,
    x_values,
)
from ezpz.plot.downsample import all_finite, band_envelope, decimate, finite

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ScalarCanvas", "plot_group", "plot_vector"]

logger = logging.getLogger(__name__)

FIGSIZE = (8.0, 4.5)  # inches
VECTOR_FIGSIZE = (12.0, 5.0)
DPI = 100
#: samples drawn per line: two per pixel column of an 800 px wide figure
MAX_POINTS = 1600
#: draws shown as ridges in a vector metric's ridge plot
MAX_RIDGES = 12
#: samples per chain trace (traces of many chains overlap anyway)
TRACE_POINTS = 400


def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _count_nonfinite(values: np.ndarray) -> int:
    return 0 if all_finite(values) else int(np.count_nonzero(~np.isfinite(values)))


def _nonfinite_note(n_bad: int) -> str:
    return f" ({n_bad} non-finite not drawn)" if n_bad else ""


def _limits(lo: float, hi: float, pad: float) -> tuple[float, float]:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return 0.0, 1.0
    if hi <= lo:
        half = 0.5 if lo == 0 else abs(lo) * 0.05
        return lo - half, hi + half
    margin = (hi - lo) * pad
    return lo - margin, hi + margin


class ScalarCanvas:
    """One figure reused for every scalar metric of a group.

    Creating axes (and their tick objects) costs more than drawing a
    decimated line, so the axes, lines and note are made once and only their
    data, labels and limits change per metric; bands and the legend, which
    depend on which statistics a metric has, are rebuilt.
    """

    def __init__(self) -> None:
        self.fig = _new_figure(FIGSIZE)
        ax = self.ax = self.fig.add_subplot()
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        (self.raw,) = ax.plot([], [], color="C0", lw=0.8)
        (self.point,) = ax.plot([], [], "o", color="C0", ms=3)  # a lone sample draws no line
        (self.mean,) = ax.plot([], [], color="C1", lw=1.0, label="mean")
        self.note = ax.text(0.5, 0.5, "", ha="center", va="center", transform=ax.transAxes)
        self.note.set_color("0.4")
        self._extras: list = []  # bands and legend of the current metric

    def draw(
        self, ds: xr.Dataset, metric: Metric, *, group: str, start: int, x: np.ndarray
    ) -> None:
        """Show ``metric`` (draws from ``start`` on) in place of the previous one."""
        ax = self.ax
        for artist in self._extras:
            artist.remove()
        self._extras = []
        for artist in (self.raw, self.point, self.mean, self.note):
            artist.set_visible(False)

        x = x[start:]
        main = np.asarray(ds[metric.main_var()].values[start:], dtype=np.float64)
        n_bad = _count_nonfinite(main)
        ax.set_title(metric.label(group) + _nonfinite_note(n_bad), fontsize=11)
        ax.set_ylabel(metric.base)
        if x.size == 0 or n_bad == main.size:
            self.note.set_text("no finite values after warmup" if x.size else "no samples")
            self.note.set_visible(True)
            ax.set_xlim(*_limits(float(x[0]), float(x[-1]), 0) if x.size else (0, 1))
            ax.set_ylim(0, 1)
            return

        def col(stat: str) -> np.ndarray | None:
            var = metric.stats.get(stat)
            return None if var is None else finite(ds[var].values[start:])

        mean, lo, hi, std = col("mean"), col("min"), col("max"), col("std")
        drawn: list[np.ndarray] = []  # every y drawn, for the y limits
        handles: list[Any] = []
        if lo is not None and hi is not None:
            band = band_envelope(x, lo, hi, MAX_POINTS)
            poly = ax.fill_between(band.x, band.lo, band.hi, color="C1", alpha=0.25, lw=0)
            poly.set_label("min..max")
            self._extras.append(poly)
            handles.append(poly)
            drawn += [band.lo, band.hi]
        if mean is not None and std is not None:
            band = band_envelope(x, mean - std, mean + std, MAX_POINTS)
            poly = ax.fill_between(band.x, band.lo, band.hi, color="C1", alpha=0.45, lw=0)
            poly.set_label("mean ± std")
            self._extras.append(poly)
            handles.append(poly)
            drawn += [band.lo, band.hi]
        if metric.raw is not None:
            xr_, yr = decimate(x, finite(main), MAX_POINTS)
            self.raw.set_data(xr_, yr)
            self.raw.set_label("rank 0" if metric.stats else metric.base)
            self.raw.set_visible(True)
            handles.append(self.raw)
            drawn.append(yr)
            if np.count_nonzero(np.isfinite(yr)) == 1:
                self.point.set_data(xr_, yr)
                self.point.set_visible(True)
        if mean is not None:
            xm, ym = decimate(x, mean, MAX_POINTS)
            self.mean.set_data(xm, ym)
            self.mean.set_visible(True)
            handles.append(self.mean)
            drawn.append(ym)
        if metric.stats:
            self._extras.append(ax.legend(handles=handles, loc="best", fontsize=8, frameon=False))
        ys = np.concatenate(drawn)
        ax.set_xlim(*_limits(float(x[0]), float(x[-1]), 0.0))
        ax.set_ylim(*_limits(float(np.nanmin(ys)), float(np.nanmax(ys)), 0.05))


def _density(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram on ``edges`` smoothed by a short triangular kernel, peak scaled to 1."""
    counts, _ = np.histogram(values, bins=edges)
    smooth = np.convolve(counts.astype(np.float64), [0.25, 0.5, 1.0, 0.5, 0.25], mode="same")
    peak = smooth.max()
    return smooth / peak if peak > 0 else smooth


def plot_vector(
    fig: Figure,
    ds: xr.Dataset,
    metric: Metric,
    *,
    group: str,
    start: int,
    x: np.ndarray,
    num_chains: int,
) -> None:
    """Draw one vector metric: chain traces (left) and a ridge plot over chains (right)."""
    values = np.asarray(ds[metric.main_var()].values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n_chains_total = values.shape[1]
    values = finite(values[start:, : max(1, num_chains)])
    x = x[start:]
    shown = values.shape[1]
    label = metric.label(group)
    capped = f", {shown} of {n_chains_total} chains" if shown < n_chains_total else ""
    fig.suptitle(f"{label}{capped}", fontsize=11)
    ax_trace, ax_ridge = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    ax_trace.set_xlabel("step")
    ax_trace.set_ylabel(metric.base)
    ax_ridge.set_xlabel(metric.base)
    ax_ridge.set_ylabel("step")
    ok = np.isfinite(values)
    if x.size == 0 or not ok.any():
        _note(ax_trace, "no finite values after warmup")
        _note(ax_ridge, "no finite values after warmup")
        return

    from matplotlib.collections import LineCollection

    segments = []
    for chain in range(shown):
        xs, ys = decimate(x, values[:, chain], TRACE_POINTS)
        segments.append(np.column_stack([xs, ys]))
    alpha = max(0.05, min(0.8, 4.0 / shown))
    ax_trace.add_collection(LineCollection(segments, colors="C0", linewidths=0.6, alpha=alpha))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN draws stay NaN, as intended
        chain_mean = np.nanmean(values, axis=1)
    xm, ym = decimate(x, chain_mean, MAX_POINTS)
    ax_trace.plot(xm, ym, color="C1", lw=1.2, label="mean over chains")
    ax_trace.legend(loc="best", fontsize=8, frameon=False)
    ax_trace.autoscale_view()
    ax_trace.margins(x=0)
    ax_trace.grid(True, alpha=0.3)

    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, 49)
    centers = 0.5 * (edges[:-1] + edges[1:])
    rows = np.unique(
        np.linspace(0, values.shape[0] - 1, min(MAX_RIDGES, values.shape[0])).astype(int)
    )
    cmap_values = np.linspace(0.15, 0.85, rows.size)
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for level, (row, shade) in enumerate(zip(rows, cmap_values, strict=True)):
        row_values = values[row][np.isfinite(values[row])]
        dens = _density(row_values, edges) * 0.9
        ax_ridge.fill_between(centers, level, level + dens, color=cmap(shade), alpha=0.8, lw=0)
        ax_ridge.plot(centers, level + dens, color="0.2", lw=0.5)
    ax_ridge.set_yticks(range(rows.size), [str(int(v)) for v in x[rows]], fontsize=7)
    ax_ridge.set_ylim(-0.1, rows.size + 0.1)


def plot_group(
    ds: xr.Dataset,
    outdir: Path,
    *,
    group: str,
    warmup: float = 0.0,
    num_chains: int = 128,
    title: str | None = None,
) -> list[Path]:
    """Write one PNG per metric of ``ds`` under ``{outdir}/plots/mplot/{group or "history"}/``.

    ``warmup`` (fraction < 1 or count >= 1) leading draws are left out;
    vector metrics draw at most ``num_chains`` chains; ``title`` goes above
    every figure (ezpz 0.26's ``plot_all(title=...)``). PNGs left in that
    directory by an earlier run that this run does not produce are removed,
    so a re-run into the same outdir leaves exactly this run's plots.
    Returns the written paths, in metric order.
    """
    if num_chains < 1:
        raise ValueError(f"num_chains must be >= 1, got {num_chains}")
    plot_dir = Path(outdir) / "plots" / "mplot" / group_dirname(group)
    plot_dir.mkdir(parents=True, exist_ok=True)
    metrics = metric_layout(ds)
    x = x_values(ds)
    start = warmup_start(x.size, warmup)

    import matplotlib

    written: list[Path] = []
    taken: set[str] = set()
    # LaTeX text (a user's rcParams) would make every plot slow, or fail without a TeX install.
    with matplotlib.rc_context({"text.usetex": False}):
        canvas: ScalarCanvas | None = None
        for metric in metrics:
            path = plot_dir / f"{unique_stem(metric.base, taken)}.png"
            try:
                if metric.vector:
                    fig = _new_figure(VECTOR_FIGSIZE)
                    plot_vector(
                        fig, ds, metric, group=group, start=start, x=x, num_chains=num_chains
                    )
                    if title:
                        fig.suptitle(f"{title}: {fig.get_suptitle()}", fontsize=11)
                else:
                    if canvas is None:
                        canvas = ScalarCanvas()
                        if title:
                            canvas.fig.suptitle(title, fontsize=12)
                    canvas.draw(ds, metric, group=group, start=start, x=x)
                    fig = canvas.fig
                fig.savefig(path, dpi=DPI)
            except Exception:  # one bad metric must not cost the others their plots
                logger.exception("could not plot %s", metric.label(group))
                continue
            written.append(path)

    remove_stale(plot_dir, written, "*.png")
    logger.debug("wrote %d matplotlib plots to %s", len(written), plot_dir)
    return written
