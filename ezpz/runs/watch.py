"""``ezpz-history watch RUN``: a live terminal view of a running job.

One frame is a header (run id, world size, last step, steps/s, time since the
last line, and ``interrupted``/``finished`` when the run's events say so), the
latest value of every metric in the console-summary style (``loss=0.078(±
0.026)``), one line per group, and plotext line plots of the selected metrics
over the last ``--last`` rows. Frames are built from a :class:`TailReader`,
so each redraw reads only what was appended since the last one.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ezpz.history.keys import ALL_STAT_SUFFIXES, STEP_FIELD, TIME_FIELD, split_group
from ezpz.runs.locate import RunInfo
from ezpz.runs.records import EVENT_FIELD, run_state, scalar_items, start_event
from ezpz.runs.tail import TailReader

DEFAULT_INTERVAL = 2.0
DEFAULT_LAST = 1000
PLOT_HEIGHT = 12
CLEAR = "\x1b[H\x1b[2J\x1b[3J"
# Splits a console summary into its tokens: a space before the next ``key=``.
_TOKEN_SPLIT = re.compile(r" +(?=[^\s=(]+=)")


@dataclass
class WatchOptions:
    """What a frame shows."""

    metrics: Sequence[str] = ()  # keys to plot ("loss" matches "train/loss" too)
    group: str | None = None  # plot every base metric of this group
    last: int = DEFAULT_LAST
    width: int | None = None  # default: the terminal's
    plots: bool = True
    precision: int = 4


def _is_stat(key: str, keys: Iterable[str]) -> bool:
    base, sep, suffix = key.rpartition("/")
    return bool(sep) and suffix in ALL_STAT_SUFFIXES and base in keys


def latest_values(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """The last value of every scalar key over ``rows`` (in first-seen key order)."""
    merged: dict[str, Any] = {}
    for row in rows:
        merged.update(row)
    return dict(scalar_items(merged))


def steps_per_second(rows: Sequence[dict[str, Any]], window: int = 100) -> float | None:
    """Steps per second over the last ``window`` rows (None with fewer than two steps)."""
    tail = list(rows)[-window:]
    pairs = [
        (s, t)
        for s, t in ((r[STEP_FIELD], r.get(TIME_FIELD)) for r in tail)
        if isinstance(t, (int, float))
    ]
    if len(pairs) < 2:
        return None
    (s0, t0), (s1, t1) = pairs[0], pairs[-1]
    if t1 <= t0 or s1 <= s0:
        return None
    return (s1 - s0) / (t1 - t0)


def _ago(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _rate(rate: float) -> str:
    return f"{rate:.1f} steps/s" if rate >= 1 else f"{rate:.3g} steps/s"


def header_lines(info: RunInfo, reader: TailReader, now: float | None = None) -> list[str]:
    """The frame's first lines: identity, progress and state."""
    events = reader.events
    start = start_event(events) or {}
    state = run_state(events)
    rows = reader.rows
    world = start.get("world_size")
    name = start.get("run_name") or info.run_name
    first = f"run {info.run_id}" + (f" ({name})" if name else "")
    first += f" · world size {world if world is not None else '?'}"
    if state is not None:
        first += f" · {state}"
    if rows:
        last = rows[-1]
        rate = steps_per_second(rows)
        t_last = last.get(TIME_FIELD)
        age = (now if now is not None else time.time()) - t_last if t_last else math.nan
        second = f"step {last[STEP_FIELD]} · " + (_rate(rate) if rate is not None else "? steps/s")
        second += f" · last line {_ago(age)} ago"
    else:
        second = "no metric rows yet"
    return [first, second, f"{info.jsonl}"]


def summary_lines(latest: dict[str, float], width: int, precision: int) -> list[str]:
    """One console-summary line per group, wrapped at ``width``."""
    from ezpz.history.summary import format_compact_summary

    by_group: dict[str, dict[str, float]] = {}
    for key, value in latest.items():
        group, name = split_group(key)
        by_group.setdefault(group, {})[name] = value
    out: list[str] = []
    label_width = max((len(g or "-") for g in by_group), default=0)
    for group, values in by_group.items():
        text = format_compact_summary(values, precision=precision)
        tokens = _TOKEN_SPLIT.split(text) if text else []
        prefix = (group or "-").ljust(label_width) + (" " if label_width else "")
        line = prefix
        for token in tokens:
            if line.strip() and len(line) + 1 + len(token) > width:
                out.append(line.rstrip())
                line = " " * len(prefix)
            line += ("" if line.endswith(" ") or not line else " ") + token
        if line.strip():
            out.append(line.rstrip())
    return out


def select_metrics(keys: Sequence[str], opts: WatchOptions) -> list[str]:
    """The keys to plot: ``--metrics`` (exact or group-less names), else ``--group``'s."""
    keyset = set(keys)
    base = [k for k in keys if not _is_stat(k, keyset)]
    if opts.metrics:
        chosen: list[str] = []
        for want in opts.metrics:
            hits = [k for k in base if k == want] or [k for k in base if split_group(k)[1] == want]
            chosen.extend(h for h in hits if h not in chosen)
        return chosen
    if opts.group is not None:
        return [k for k in base if split_group(k)[0] == opts.group]
    return base[:4]


def plot_lines(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    width: int,
    height: int = PLOT_HEIGHT,
) -> list[str]:
    """plotext line plots of ``keys`` against ``_step``, one per key."""
    from ezpz.runs._tplot import render

    out: list[str] = []
    for key in keys:
        xs: list[float] = []
        ys: list[float] = []
        for row in rows:
            value = row.get(key)
            if (type(value) is float or type(value) is int) and math.isfinite(value):
                xs.append(float(row[STEP_FIELD]))
                ys.append(float(value))
        if not xs:
            out.append(f"{key}: no finite values in the last {len(rows)} rows")
            continue
        out.extend(render(key, [(xs, ys, None)], width, height).splitlines())
    return out


def render_frame(
    info: RunInfo, reader: TailReader, opts: WatchOptions, now: float | None = None
) -> str:
    """One frame as text (no screen control codes)."""
    width = opts.width or shutil.get_terminal_size((100, 40)).columns
    width = max(40, width)
    lines = header_lines(info, reader, now)
    rule = "─" * width
    lines.append(rule)
    latest = dict(scalar_items(reader.latest))
    lines.extend(summary_lines(latest, width, opts.precision) or ["(no scalar metrics)"])
    if opts.plots and reader.rows:
        keys = select_metrics(list(latest), opts)
        if keys:
            lines.append(rule)
            lines.extend(plot_lines(reader.rows, keys, width))
        elif opts.metrics or opts.group is not None:
            lines.append(rule)
            lines.append("(no metric matches --metrics/--group)")
    if reader.skipped:
        lines.append(f"({reader.skipped} lines that are not ezpz records were skipped)")
    return "\n".join(lines) + "\n"


def watch(
    info: RunInfo,
    opts: WatchOptions,
    *,
    interval: float = DEFAULT_INTERVAL,
    once: bool = False,
    out: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Draw frames until Ctrl-C (or one with ``once``). Returns the exit status."""
    out = out or sys.stdout
    reader = TailReader(info.jsonl, keep=opts.last)
    try:
        reader.poll()
        if once:
            out.write(render_frame(info, reader, opts))
            out.flush()
            return 0
        while True:
            frame = render_frame(info, reader, opts)
            out.write(CLEAR + frame)
            out.flush()
            sleep(interval)
            try:
                reader.poll()
            except FileNotFoundError:  # rotated away: wait for the new file
                continue
    except KeyboardInterrupt:
        out.write("\n")
        out.flush()
        return 0


__all__ = [
    "EVENT_FIELD",
    "WatchOptions",
    "header_lines",
    "latest_values",
    "render_frame",
    "steps_per_second",
    "summary_lines",
    "watch",
]
