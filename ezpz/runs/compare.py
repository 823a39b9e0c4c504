"""``ezpz-history compare RUN_A RUN_B [...]``: a table and overlaid plots.

For every scalar metric of any run (statistics ``/mean`` ``/min`` ... only
with ``stats=True``), per run: the last value, the minimum, the best value,
the mean over the last 10% of its points, and the difference of the last
value to the first run's. Metrics two or more runs share are drawn overlaid,
against the step (``_step``): matplotlib PNGs in ``outdir`` (linked from
``compare.md``) and plotext plots in the terminal. Runs of different lengths
and with different keys are fine: a run that lacks a metric shows ``-``.

"Best" is the maximum for metrics whose name says higher is better (``acc``,
``accuracy``, ``auc``, ``f1``, ``precision``, ``recall``, ``score``,
``reward``, ``mfu``, ``throughput``, ``tflops``, ``per_sec``/``per_s``) and the
minimum for everything else (losses, errors, times); ``higher_is_better`` adds
names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ezpz.history.keys import ALL_STAT_SUFFIXES, STEP_FIELD
from ezpz.runs.locate import RunInfo
from ezpz.runs.records import EVENT_FIELD, iter_lines, read_log, scalar_items

TAIL_FRACTION = 0.10
_HIGHER_IS_BETTER = re.compile(
    r"(^|[/_.\-])(acc|accuracy|auc|f1|precision|recall|score|reward|mfu|throughput|"
    r"tflops|per_sec|per_s|tokens_per_s|samples_per_s)($|[/_.\-])",
    re.IGNORECASE,
)


@dataclass
class Series:
    """One metric of one run: steps and values in file order."""

    steps: np.ndarray
    values: np.ndarray


@dataclass
class RunSeries:
    """Every scalar metric of one run."""

    info: RunInfo
    metrics: dict[str, Series] = field(default_factory=dict)


@dataclass
class Stats:
    """The table cells of one metric in one run."""

    last: float
    min: float
    best: float
    tail_mean: float
    delta: float | None  # last - first run's last (None for the first run / missing there)
    points: int


def effective_rows(info: RunInfo) -> list[dict[str, Any]]:
    """The run's rows after the superseding rule between resumed segments.

    When a resumed segment (a ``start`` event with ``resumed: true``) begins at
    a step that was recorded before, the earlier rows from that step on are
    dropped, as ``History(resume=...)`` does (docs/restarts.md).
    """
    log = read_log(info.jsonl)  # raises for empty and foreign files
    if not any(e.get(EVENT_FIELD) == "start" and e.get("resumed") for e in log.events):
        return log.rows
    rows: list[dict[str, Any]] = []
    cut_pending = False
    for line in iter_lines(info.jsonl):
        record = line.record
        if line.is_event and record is not None:
            if record.get(EVENT_FIELD) == "start" and record.get("resumed"):
                cut_pending = True
        elif line.is_row and record is not None:
            if cut_pending:
                first = record[STEP_FIELD]
                rows = [r for r in rows if r[STEP_FIELD] < first]
                cut_pending = False
            rows.append(record)
    return rows


def load_series(info: RunInfo) -> RunSeries:
    """All scalar metrics of ``info``'s JSONL (events and torn lines skipped)."""
    steps: dict[str, list[int]] = {}
    values: dict[str, list[float]] = {}
    for row in effective_rows(info):
        step = row[STEP_FIELD]
        for key, value in scalar_items(row):
            if key not in steps:
                steps[key], values[key] = [], []
            steps[key].append(step)
            values[key].append(value)
    run = RunSeries(info)
    for key in steps:
        run.metrics[key] = Series(
            np.asarray(steps[key], dtype=np.int64), np.asarray(values[key], dtype=np.float64)
        )
    return run


def higher_is_better(key: str, extra: Sequence[str] = ()) -> bool:
    """Whether ``best`` is the maximum for ``key`` (see the module docstring)."""
    name = key.rsplit("/", 1)[-1] if key.rsplit("/", 1)[-1] not in ALL_STAT_SUFFIXES else key
    if any(key == e or key.endswith("/" + e) for e in extra):
        return True
    return bool(_HIGHER_IS_BETTER.search(name)) or bool(_HIGHER_IS_BETTER.search(key))


def _is_stat(key: str, keys: set[str]) -> bool:
    base, sep, suffix = key.rpartition("/")
    return bool(sep) and suffix in ALL_STAT_SUFFIXES and base in keys


def metric_keys(runs: Sequence[RunSeries], stats: bool = False) -> list[str]:
    """Every metric of any run, in first-seen order (statistics only with ``stats``)."""
    order: dict[str, None] = {}
    for run in runs:
        keys = set(run.metrics)
        for key in run.metrics:
            if stats or not _is_stat(key, keys):
                order.setdefault(key, None)
    return list(order)


def shared_keys(runs: Sequence[RunSeries], keys: Sequence[str]) -> list[str]:
    """The keys at least two runs have (all of them when only one run is given)."""
    need = min(2, len(runs))
    return [k for k in keys if sum(k in r.metrics for r in runs) >= need]


def _nan_reduce(fn: Any, values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(fn(finite)) if finite.size else math.nan


def series_stats(
    series: Series, key: str, first_last: float | None, extra_higher: Sequence[str] = ()
) -> Stats:
    """The table cells for one series; NaN values are left out of min/best/mean."""
    v = series.values
    n_tail = max(1, math.ceil(TAIL_FRACTION * v.size))
    last = float(v[-1])
    lo = _nan_reduce(np.min, v)
    best = _nan_reduce(np.max, v) if higher_is_better(key, extra_higher) else lo
    tail_mean = _nan_reduce(np.mean, v[-n_tail:])
    delta = None if first_last is None else last - first_last
    return Stats(last, lo, best, tail_mean, delta, int(v.size))


def compare_table(
    runs: Sequence[RunSeries], keys: Sequence[str], extra_higher: Sequence[str] = ()
) -> dict[str, list[Stats | None]]:
    """``{key: [Stats of run 0, Stats of run 1, ...]}`` (None where a run lacks the key)."""
    table: dict[str, list[Stats | None]] = {}
    for key in keys:
        first = runs[0].metrics.get(key)
        first_last = float(first.values[-1]) if first is not None else None
        row: list[Stats | None] = []
        for i, run in enumerate(runs):
            series = run.metrics.get(key)
            if series is None or series.values.size == 0:
                row.append(None)
                continue
            row.append(series_stats(series, key, None if i == 0 else first_last, extra_higher))
        table[key] = row
    return table


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.4g}"
    return f"{value:.6g}"


def _fmt_delta(value: float | None) -> str:
    return "-" if value is None else ("+" if value > 0 else "") + _fmt(value)


COLUMNS = ("metric", "run", "last", "min", "best", "mean last 10%", "Δ last vs first", "points")


def table_rows(
    runs: Sequence[RunSeries], table: dict[str, list[Stats | None]]
) -> list[tuple[str, ...]]:
    """Text cells, one row per (metric, run)."""
    rows: list[tuple[str, ...]] = []
    for key, cells in table.items():
        for run, stats in zip(runs, cells, strict=True):
            if stats is None:
                rows.append((key, run.info.label, "-", "-", "-", "-", "-", "0"))
                continue
            rows.append(
                (
                    key,
                    run.info.label,
                    _fmt(stats.last),
                    _fmt(stats.min),
                    _fmt(stats.best),
                    _fmt(stats.tail_mean),
                    _fmt_delta(stats.delta),
                    str(stats.points),
                )
            )
    return rows


def format_text_table(rows: Sequence[Sequence[str]]) -> str:
    """Aligned plain-text table with a header."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    previous = None
    for row in rows:
        cells = list(row)
        if cells[0] == previous:
            cells[0] = ""
        else:
            previous = cells[0]
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def format_markdown_table(rows: Sequence[Sequence[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines.extend("| " + " | ".join(esc(c) for c in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def png_name(key: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
    return (cleaned.strip("._") or "metric") + ".png"


def write_pngs(runs: Sequence[RunSeries], keys: Sequence[str], outdir: Path) -> dict[str, Path]:
    """One overlaid PNG per key in ``outdir/plots``; returns ``{key: path}``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    plots = outdir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for key in keys:
        fig = Figure(figsize=(7, 4), dpi=100)
        ax = fig.add_subplot()
        for run in runs:
            series = run.metrics.get(key)
            if series is None:
                continue
            ax.plot(series.steps, series.values, label=run.info.label, linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = plots / png_name(key)
        fig.savefig(path)
        written[key] = path
    return written


def terminal_plots(runs: Sequence[RunSeries], keys: Sequence[str], width: int = 100) -> str:
    """plotext overlays of ``keys``, one plot per key (one marker per run)."""
    from ezpz.runs._tplot import render

    out: list[str] = []
    for key in keys:
        series = []
        for run in runs:
            s = run.metrics.get(key)
            if s is None:
                continue
            ok = np.isfinite(s.values)
            if ok.any():
                series.append(
                    (s.steps[ok].astype(float).tolist(), s.values[ok].tolist(), run.info.label)
                )
        if series:
            out.append(render(key, series, width, 15))
    return "\n\n".join(out) + ("\n" if out else "")


def write_markdown(
    runs: Sequence[RunSeries], rows: Sequence[Sequence[str]], pngs: dict[str, Path], outdir: Path
) -> Path:
    """``outdir/compare.md``: the runs, the table and the PNGs (relative links)."""
    from ezpz._files import atomic_write_text

    lines = ["# Run comparison", "", "| run | JSONL | metrics |", "|---|---|---|"]
    for run in runs:
        lines.append(f"| {run.info.label} | `{run.info.jsonl}` | {len(run.metrics)} |")
    lines += ["", "Δ is the last value minus the first run's last value.", ""]
    lines.append(format_markdown_table(rows))
    if pngs:
        lines += ["## Plots", ""]
        for key, path in pngs.items():
            rel = path.relative_to(outdir).as_posix()
            lines += [f"### {key}", "", f"![{key}]({rel})", ""]
    target = outdir / "compare.md"
    atomic_write_text(target, "\n".join(lines).rstrip() + "\n")
    return target
