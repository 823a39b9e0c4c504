"""Small plotext helper for watch and compare (plotext's figure object, plain text)."""

from __future__ import annotations

from collections.abc import Sequence

#: Distinct markers per series so that runs stay apart without colours.
SERIES_MARKERS = ("braille", "x", "+", "o", "*", "#", "@", "%")


def render(
    title: str,
    series: Sequence[tuple[Sequence[float], Sequence[float], str | None]],
    width: int,
    height: int,
) -> str:
    """A line chart of ``(x, y, label)`` series as plain text (no colour codes)."""
    import numpy as np
    import plotext

    from ezpz.plot.downsample import decimate

    fig = plotext.figure
    fig.clear()
    fig.plot_size(width, height)
    multi = len(series) > 1
    for i, (xs, ys, label) in enumerate(series):
        marker = SERIES_MARKERS[i % len(SERIES_MARKERS)] if multi else "braille"
        # Braille draws 2 points per cell: more points only cost time.
        xd, yd = decimate(np.asarray(xs, dtype=np.float64), np.asarray(ys), 2 * width)
        signal = fig.signal(xd.tolist(), yd.tolist(), marker=marker)
        if len(xs) > 1:
            signal.lines()
        if label:
            signal.label(label)
        fig.draw(signal)
    fig.title(title)
    fig.label("step")
    text = fig.build()
    fig.clear()
    return plotext.uncolorize(str(text)).rstrip()
