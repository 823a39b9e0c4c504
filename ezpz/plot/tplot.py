"""Terminal (plotext) plots for one finalize group: ``{outdir}/plots/tplot/{group}/*.txt``.

Per metric ``<name>``:

- ``<name>.txt``: the metric (raw values, else the cross-rank mean);
- ``<name>-mean.txt``, ``-min``, ``-max``, ``-std``: each cross-rank statistic present;
- ``<name>-summary.txt``: all of them in one chart (``·`` mean, ``-`` min, ``+`` max, raw line);
- ``<name>-hist.txt``: histogram of the values.

Files are plain UTF-8 text without colour codes (``cat`` or ``less`` them);
none is ever empty: a metric with nothing to draw gets a one-line note.
``EZPZ_TPLOT_MARKER`` picks the marker of line plots (``braille`` default,
``fhd``, ``hd``, ``dot``, or any single character) and ``EZPZ_TPLOT_TYPE``
the kind of the per-metric and per-statistic plots (``line`` default, ``hist``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ezpz._env import env_str
from ezpz.plot import (
    STATS,
    Metric,
    group_dirname,
    metric_layout,
    remove_stale,
    unique_stem,
    warmup_start,
)
from ezpz.plot import x_values as _x_values
from ezpz.plot.downsample import decimate

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = ["plot_group", "render_hist", "render_lines", "tplot_marker", "tplot_type"]

logger = logging.getLogger(__name__)

WIDTH, HEIGHT = 80, 20  # terminal cells
#: samples per line: a braille cell holds 2 columns of dots, so ~2 per dot column
MAX_POINTS = 4 * WIDTH
HIST_BINS = 40
DEFAULT_MARKER = "braille"
PLOT_TYPES = ("line", "hist")
#: markers of the summary overlay, as promised in the docs
OVERLAY_MARKERS = {"mean": "·", "min": "-", "max": "+"}
_HIGH_RES = ("braille", "fhd", "hd")

_warned: set[str] = set()


def _warn_once(message: str, *args: object) -> None:
    text = message % args
    if text not in _warned:
        _warned.add(text)
        logger.warning(text)


def tplot_marker() -> str:
    """Marker for line plots from ``EZPZ_TPLOT_MARKER``; unknown ones fall back to braille."""
    name = env_str("EZPZ_TPLOT_MARKER", DEFAULT_MARKER)
    # plotext would draw any longer string as a text label at every point, so
    # only its named codes and single characters count as markers.
    if name in _marker_codes() or len(name) == 1:
        return name
    _warn_once("EZPZ_TPLOT_MARKER=%r is not a plotext marker; using %r", name, DEFAULT_MARKER)
    return DEFAULT_MARKER


def _marker_codes() -> set[str]:
    codes = set(_HIGH_RES)
    try:  # the named symbols ("dot", "heart", ...) live in a private plotext module
        from plotext._constants import enums

        codes = set(enums.hd_markers_codes) | set(enums.symbol_codes)
    except (ImportError, AttributeError):
        pass
    return codes


def tplot_type() -> str:
    """Plot kind from ``EZPZ_TPLOT_TYPE`` (``line`` or ``hist``); anything else means line."""
    kind = env_str("EZPZ_TPLOT_TYPE", "line").lower()
    if kind in ("histogram", "histo"):
        kind = "hist"
    if kind not in PLOT_TYPES:
        _warn_once("EZPZ_TPLOT_TYPE=%r is not one of %s; using 'line'", kind, PLOT_TYPES)
        return "line"
    return kind


def _figure():
    """plotext's master figure, reset: it is process-global, so every plot starts from clear()."""
    import plotext

    fig = plotext.figure
    fig.clear()
    fig.plot_size(WIDTH, HEIGHT)
    return fig


def _text(fig) -> str:
    import plotext

    # uncolorize: files stay readable by cat, less, editors and markdown.
    return plotext.uncolorize(fig.build()).rstrip() + "\n"


def _finite_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(y)
    return x[ok], y[ok]


def render_lines(
    title: str,
    series: list[tuple[np.ndarray, np.ndarray, str]]
    | list[tuple[np.ndarray, np.ndarray, str, str]],
    *,
    xlabel: str = "step",
    ylabel: str | None = None,
    connect: bool = True,
) -> str:
    """A line chart of ``(x, y, marker[, label])`` series as plain text; ``y`` NaN/inf are skipped.

    ``connect=False`` draws points only (a scatter plot); a series' optional
    fourth item labels it in a legend.
    """
    drawn = []
    for x, y, marker, *label in series:
        xd, yd = decimate(np.asarray(x), np.asarray(y, dtype=np.float64), MAX_POINTS)
        xd, yd = _finite_xy(xd, yd)
        if xd.size:
            drawn.append((xd, yd, marker, label[0] if label else None))
    if not drawn:
        return f"{title}: no finite values to plot\n"
    fig = _figure()
    for xd, yd, marker, name in drawn:
        signal = fig.signal(xd.astype(np.float64).tolist(), yd.tolist(), marker=marker)
        if connect and marker in _HIGH_RES and xd.size > 1:
            signal.lines()  # high-resolution markers draw a continuous line
        if name:
            signal.label(name)
        fig.draw(signal)
    fig.title(title)
    fig.label(xlabel)
    if ylabel:
        fig.label(ylabel, axis="y")
    return _text(fig)


def render_hist(title: str, values: np.ndarray, *, bins: int = HIST_BINS) -> str:
    """A histogram of the finite ``values`` as plain text."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return f"{title}: no finite values to plot\n"
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:  # plotext cannot bin a zero-width range
        return f"{title}: all {values.size} values equal {lo:.6g}\n"
    fig = _figure()
    counts, edges = np.histogram(values, bins=min(bins, max(1, values.size)))
    centers = 0.5 * (edges[:-1] + edges[1:])
    bars = fig.bar(centers.tolist(), counts.astype(np.float64).tolist(), width=1.0)
    fig.draw(bars)
    fig.title(f"{title} (n={values.size})")
    fig.label("value")
    return _text(fig)


class _Series:
    """One series of a metric: all values (for histograms) and, decimated once, for lines."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.y = y
        self.xd, self.yd = decimate(x, y, MAX_POINTS)

    def plot(self, kind: str, title: str, marker: str) -> str:
        """One plot of the series, of the kind EZPZ_TPLOT_TYPE asks for."""
        if kind == "hist":
            return render_hist(title, self.y)
        return render_lines(title, [(self.xd, self.yd, marker)])


def _metric_plots(
    ds: xr.Dataset, metric: Metric, *, group: str, start: int, x: np.ndarray, marker: str, kind: str
) -> list[tuple[str, str]]:
    """(name suffix, text) of every plot of one metric."""
    label = metric.label(group)
    main = np.asarray(ds[metric.main_var()].values[start:], dtype=np.float64)
    if main.ndim == 2:  # vector metric: chains collapse to their mean; the histogram keeps all
        chains = main
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN draws stay NaN
            mean = _Series(x, np.nanmean(chains, axis=1))
        title = f"{label} (mean over {chains.shape[1]} chains)"
        return [
            ("", mean.plot(kind, title, marker)),
            ("hist", render_hist(f"{label} (all chains)", chains)),
        ]
    raw = _Series(x, main)
    stats = {
        s: _Series(x, np.asarray(ds[v].values[start:], dtype=np.float64))
        for s, v in metric.stats.items()
    }
    plots = [("", raw.plot(kind, label if metric.raw else f"{label}/mean", marker))]
    plots += [(s, stats[s].plot(kind, f"{label}/{s}", marker)) for s in STATS if s in stats]
    overlay = [
        (stats[s].xd, stats[s].yd, OVERLAY_MARKERS[s]) for s in ("min", "max", "mean") if s in stats
    ]
    if overlay:
        key = "  ".join(f"{OVERLAY_MARKERS[s]} {s}" for s in ("mean", "min", "max") if s in stats)
        if metric.raw is not None:  # drawn first, so the statistics' markers stay on top
            overlay.insert(0, (raw.xd, raw.yd, marker))
            key += f"  {marker if len(marker) == 1 else '[' + marker + ']'} raw"
        plots.append(("summary", render_lines(f"{label}   {key}", overlay)))
    plots.append(("hist", render_hist(label, main)))
    return plots


def plot_group(
    ds: xr.Dataset,
    outdir: Path,
    *,
    group: str,
    warmup: float = 0.0,
    plot_type: str | None = None,
    append: bool = False,
) -> list[Path]:
    """Write the terminal plots of every metric of ``ds`` under ``{outdir}/plots/tplot/{group}/``.

    ``warmup`` (fraction < 1 or count >= 1) leading draws are left out.
    ``plot_type`` (``line``/``hist``) overrides ``EZPZ_TPLOT_TYPE``. Text files
    left there by an earlier run that this run does not produce are removed;
    with ``append=True`` new plots are appended to existing files and nothing
    is removed (ezpz 0.26's ``append_tplot``). Returns the written paths,
    grouped by metric.
    """
    plot_dir = Path(outdir) / "plots" / "tplot" / group_dirname(group)
    plot_dir.mkdir(parents=True, exist_ok=True)
    x = _x_values(ds)
    start = warmup_start(x.size, warmup)
    x = x[start:]
    marker = tplot_marker()
    kind = None
    if plot_type is not None:
        kind = plot_type.strip().lower()
        kind = {"histogram": "hist", "histo": "hist"}.get(kind, kind)
        if kind not in PLOT_TYPES:
            _warn_once("tplot type %r is not one of %s; using EZPZ_TPLOT_TYPE", kind, PLOT_TYPES)
            kind = None
    if kind is None:
        kind = tplot_type()

    written: list[Path] = []
    taken: set[str] = set()
    try:
        for metric in metric_layout(ds):
            try:
                plots = _metric_plots(
                    ds, metric, group=group, start=start, x=x, marker=marker, kind=kind
                )
            except Exception:  # one bad metric must not cost the others their plots
                logger.exception("could not draw terminal plots of %s", metric.label(group))
                continue
            for suffix, text in plots:
                name = f"{metric.base}/{suffix}" if suffix else metric.base
                path = plot_dir / f"{unique_stem(name, taken)}.txt"
                with open(path, "a" if append else "w", encoding="utf-8") as fh:
                    fh.write(text)
                written.append(path)
    finally:
        _figure()  # leave plotext's global figure empty for the user's own plots

    if not append:
        remove_stale(plot_dir, written, "*.txt")
    logger.debug("wrote %d terminal plots to %s", len(written), plot_dir)
    return written
