"""Plot drawing time: ezpz's renderers against a straightforward baseline, same run.

For 10 metrics (raw + mean/min/max/std each) at 10k, 100k and 1M steps:

- baseline: a new matplotlib Figure per metric, every sample drawn (raw line,
  mean line, min..max and mean +- std bands), saved at the same size and DPI
  as ezpz's PNGs: what a first implementation does;
- ezpz mplot: ``ezpz.plot.mplot.plot_group`` (min/max decimation, one reused
  canvas);
- ezpz tplot: ``ezpz.plot.tplot.plot_group`` (7 text plots per metric).

Prints seconds per metric plot and the ratios baseline / ezpz, and how ezpz's
time grows from 10k to 1M steps (flat is the goal). Each timing is the best of
``--repeat`` runs, because the machine is shared and noisy.

    .venv/bin/python benchmarks/plot_bench.py [--repeat 3] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_plot_datasets import make_group  # noqa: E402  (the convention, built by hand)

N_METRICS = 10


def dataset(n: int):
    rng = np.random.default_rng(n)
    metrics = {f"metric{i}": rng.standard_normal(n).cumsum() / 100 for i in range(N_METRICS)}
    return make_group(n, metrics=metrics, stats=True)


def baseline_plots(ds, outdir: Path, n_metrics: int) -> int:
    """Every sample drawn, a fresh Figure per metric (no pyplot, so no leak either)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ezpz.plot.mplot import DPI, FIGSIZE

    x = ds["step"].values
    for i in range(n_metrics):
        name = f"metric{i}"
        fig = Figure(figsize=FIGSIZE, dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        lo, hi = ds[f"{name}_min"].values, ds[f"{name}_max"].values
        mean, std = ds[f"{name}_mean"].values, ds[f"{name}_std"].values
        ax.fill_between(x, lo, hi, alpha=0.15, lw=0, label="min..max")
        ax.fill_between(x, mean - std, mean + std, alpha=0.3, lw=0, label="mean ± std")
        ax.plot(x, ds[name].values, lw=0.8, label="rank 0")
        ax.plot(x, mean, lw=1.0, label="mean")
        ax.legend(loc="best")
        ax.set_title(name)
        fig.savefig(outdir / f"{name}.png", dpi=DPI)
    return n_metrics


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    t0 = time.perf_counter()
    from ezpz.plot import mplot, tplot

    import_s = time.perf_counter() - t0
    import matplotlib.figure  # noqa: F401  (import time is reported on its own line)
    import plotext  # noqa: F401

    import_s = time.perf_counter() - t0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # warm up font caches etc. so the first measured size is not penalised
        mplot.plot_group(dataset(1000), out / "warm", group="warm")
        for n in sizes:
            ds = dataset(n)
            # the baseline at 1M points is slow: time a few metrics, report per plot
            k = N_METRICS if n <= 100_000 else 2
            base = best_of(args.repeat, lambda ds=ds, k=k: baseline_plots(ds, out, k)) / k
            ez_m = best_of(args.repeat, lambda ds=ds: mplot.plot_group(ds, out, group="m"))
            ez_t = best_of(args.repeat, lambda ds=ds: tplot.plot_group(ds, out, group="t"))
            rows.append(
                {
                    "steps": n,
                    "baseline_s_per_plot": base,
                    "mplot_s_per_plot": ez_m / N_METRICS,
                    "mplot_s_10_metrics": ez_m,
                    "tplot_s_10_metrics": ez_t,
                    "speedup": base / (ez_m / N_METRICS),
                }
            )

    print(f"imports (ezpz.plot, matplotlib, plotext): {import_s:.2f} s")
    print(
        f"{'steps':>9} {'baseline s/plot':>16} {'mplot s/plot':>13} {'speedup':>8}"
        f" {'mplot 10 metrics':>17} {'tplot 10 metrics':>17}"
    )
    for r in rows:
        print(
            f"{r['steps']:>9} {r['baseline_s_per_plot']:>16.3f} {r['mplot_s_per_plot']:>13.3f}"
            f" {r['speedup']:>7.1f}x {r['mplot_s_10_metrics']:>16.2f}s"
            f" {r['tplot_s_10_metrics']:>16.2f}s"
        )
    first, last = rows[0], rows[-1]
    print(
        f"growth {first['steps']} -> {last['steps']} steps: mplot "
        f"{last['mplot_s_10_metrics'] / first['mplot_s_10_metrics']:.2f}x, tplot "
        f"{last['tplot_s_10_metrics'] / first['tplot_s_10_metrics']:.2f}x, baseline "
        f"{last['baseline_s_per_plot'] / first['baseline_s_per_plot']:.1f}x"
    )
    if args.json:
        args.json.write_text(json.dumps({"import_s": import_s, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
