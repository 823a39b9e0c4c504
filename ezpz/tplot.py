"""Terminal plots of any series, as text: ``ezpz.tplot.tplot`` and ``tplot_dict`` (ezpz 0.26 names).

``tplot(y)`` draws one series (a line, points, or a histogram);
``tplot_dict(data)`` draws several series of a dict in one chart. Inputs may
be lists (of numbers or one-element tensors), numpy arrays, torch tensors or
xarray DataArrays. The chart is returned as plain text (no colour codes) and,
with ``outfile=``, written (appended by default) to that file, whose parent
directories are created. The renderers are those of ``finalize()``'s
terminal plots (:mod:`ezpz.plot.tplot`).

``EZPZ_TPLOT_TYPE`` (``line``, ``hist``, ``scatter``) is the default
``plot_type``; ``EZPZ_TPLOT_MARKER`` (``braille``, ``fhd``, ``hd``, ``dot``
or one character) the default marker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ezpz._env import env_str

__all__ = ["PLOT_TYPES", "tplot", "tplot_dict"]

logger = logging.getLogger(__name__)

#: what ``plot_type=`` (and ``EZPZ_TPLOT_TYPE``) may say
PLOT_TYPES = ("line", "hist", "scatter")
_TYPE_ALIASES = {"histogram": "hist", "histo": "hist", "points": "scatter", "lines": "line"}


def _as_array(values: Any) -> np.ndarray:
    """float64 array from a list, tuple, numpy array, torch tensor or DataArray."""
    from ezpz.history.compat import grab_tensor

    arr = grab_tensor(values)
    arr = np.asarray(arr if arr is not None else [], dtype=np.float64)
    return arr.reshape(1) if arr.ndim == 0 else arr


def _plot_type(plot_type: str | None) -> str:
    """``plot_type`` argument > ``EZPZ_TPLOT_TYPE`` > ``line``; unknown kinds warn and draw lines."""
    kind = plot_type if plot_type is not None else env_str("EZPZ_TPLOT_TYPE", "")
    kind = _TYPE_ALIASES.get(kind.strip().lower(), kind.strip().lower()) or "line"
    if kind not in PLOT_TYPES:
        logger.warning(
            "tplot: unknown plot_type %r (use one of %s); drawing lines", kind, PLOT_TYPES
        )
        return "line"
    return kind


def _marker(marker: str | None) -> str:
    from ezpz.plot.tplot import tplot_marker

    if marker:
        return marker
    return tplot_marker()


def _title(title: str | None, label: str | None, xlabel: str | None, ylabel: str | None) -> str:
    if title is not None:
        return title
    if ylabel and xlabel:
        return f"{ylabel} vs {xlabel}"
    return ylabel or label or ""


@contextmanager
def _size(figsize: tuple[int, int] | None) -> Iterator[None]:
    """Draw at ``figsize`` (columns, rows) for this call; the module default otherwise."""
    from ezpz.plot import tplot as renderer

    if figsize is None:
        yield
        return
    width, height = (int(v) for v in figsize)
    if width < 10 or height < 5:
        raise ValueError(f"figsize must be at least (10, 5) characters, got {figsize!r}")
    saved = renderer.WIDTH, renderer.HEIGHT
    renderer.WIDTH, renderer.HEIGHT = width, height
    try:
        yield
    finally:
        renderer.WIDTH, renderer.HEIGHT = saved


def _emit(text: str, outfile: str | os.PathLike[str] | None, append: bool, verbose: bool) -> str:
    if outfile is not None:
        path = Path(outfile)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a" if append else "w", encoding="utf-8") as fh:
            fh.write(text)
        if verbose:
            logger.info("%s plot to %s", "appended" if append else "wrote", path)
    if verbose or outfile is None:
        print(text, end="")
    return text


def _draw(
    series: list[tuple[np.ndarray, np.ndarray, str | None]],
    *,
    kind: str,
    title: str,
    xlabel: str | None,
    ylabel: str | None,
    marker: str,
    bins: int | None,
) -> str:
    from ezpz.plot import tplot as renderer

    try:
        if kind == "hist":
            values = np.concatenate([y.ravel() for _, y, _ in series]) if series else np.array([])
            return renderer.render_hist(title or (ylabel or "values"), values, bins=bins or 40)
        lines = [(x, y, marker, label or "") for x, y, label in series]
        return renderer.render_lines(
            title, lines, xlabel=xlabel or "", ylabel=ylabel, connect=kind == "line"
        )
    finally:
        renderer._figure()  # leave plotext's global figure empty for the user's own plots


def tplot(
    y: Any,
    x: Any = None,
    label: str | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    marker: str | None = None,
    bins: int | None = None,
    logfreq: int = 1,
    outfile: str | os.PathLike[str] | None = None,
    plot_type: str | None = None,
    append: bool = True,
    verbose: bool = False,
    figsize: tuple[int, int] | None = None,
) -> str:
    """Draw ``y`` (against ``x``, default ``0, logfreq, 2*logfreq, ...``) as a text plot.

    Args:
        y: the values; a 2-d input (e.g. per-chain values per step) is drawn
            as a histogram of all its values, as ezpz 0.26 did.
        x: x values, same length as ``y``.
        label: legend entry of the series; also the title when nothing else names it.
        title: default ``"<ylabel> vs <xlabel>"``, else ``ylabel`` or ``label``.
        marker: plotext marker; default ``EZPZ_TPLOT_MARKER`` or braille.
        bins: histogram bins (default 40).
        logfreq: step between default x values (log every ``logfreq`` steps).
        outfile: file to write the plot to (parents created).
        plot_type: ``"line"``, ``"hist"`` or ``"scatter"``; default ``EZPZ_TPLOT_TYPE`` or line.
        append: append to ``outfile`` (default, as ezpz 0.26) instead of replacing it.
        verbose: also print the plot (it is always printed when there is no ``outfile``).
        figsize: ``(columns, rows)`` of the chart; default 80 x 20.

    Returns the plot's text. NaN and inf are left out of the drawing; a series
    with nothing finite gives a one-line note instead of an empty chart.
    """
    values = _as_array(y)
    kind = _plot_type(plot_type)
    if values.ndim > 1:
        kind = "hist"
    if x is None:
        xs = np.arange(values.size, dtype=np.float64) * (logfreq or 1)
    else:
        xs = _as_array(x).ravel()
        if values.ndim == 1 and xs.size != values.size:
            raise ValueError(f"x has {xs.size} values but y has {values.size}")
    text_title = _title(title, label, xlabel, ylabel)
    with _size(figsize):
        text = _draw(
            [(xs, values, label)],
            kind=kind,
            title=text_title,
            xlabel=xlabel if xlabel is not None else ("value" if kind == "hist" else "step"),
            ylabel=ylabel,
            marker=_marker(marker),
            bins=bins,
        )
    return _emit(text, outfile, append, verbose)


def tplot_dict(
    data: Mapping[str, Any],
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    outfile: str | os.PathLike[str] | None = None,
    append: bool = True,
    figsize: tuple[int, int] | None = None,
    *,
    plot_type: str | None = None,
    marker: str | None = None,
    verbose: bool = False,
) -> str:
    """Draw a dict as one text plot.

    A dict of numbers (``{"step0": 0.9, "step1": 0.7}``) is one series of its
    values in key order, as ezpz 0.26 drew it; a dict of series
    (``{"loss": [...], "acc": tensor}``) draws every series in one chart,
    labelled with its key (x: ``0..n-1`` of each). ``plot_type``,
    ``outfile``, ``append`` and ``figsize`` as for :func:`tplot`.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"tplot_dict() takes a dict, got {type(data).__name__}")
    arrays = {str(k): _as_array(v) for k, v in data.items()}
    if arrays and all(a.size == 1 for a in arrays.values()):
        values = np.array([a.item() for a in arrays.values()])
        series: list[tuple[np.ndarray, np.ndarray, str | None]] = [
            (np.arange(values.size, dtype=np.float64), values, None)
        ]
    else:
        series = [(np.arange(a.size, dtype=np.float64), a.ravel(), k) for k, a in arrays.items()]
    kind = _plot_type(plot_type)
    with _size(figsize):
        text = _draw(
            series,
            kind=kind,
            title=title if title is not None else (ylabel or ", ".join(arrays) or "data"),
            xlabel=xlabel if xlabel is not None else ("value" if kind == "hist" else "index"),
            ylabel=ylabel,
            marker=_marker(marker),
            bins=None,
        )
    return _emit(text, outfile, append, verbose)
