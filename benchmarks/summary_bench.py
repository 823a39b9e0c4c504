"""Cost of the console summary line per update(), against baselines measured in the same run.

    .venv/bin/python benchmarks/summary_bench.py [--metrics 10] [--repeat 7]

Input: what History passes in a distributed run: N metrics, each with its
``/mean /max /min /std`` statistics (N=10 -> 50 keys), a counter and a
hyperparameter among them.

* ``SummaryFormatter.format``: the hot path (layout cached per key tuple).
* ``format_compact_summary``: the stateless function (layout rebuilt per call).
* baseline ``naive f-string``: ``" ".join(f"{k}={v:.6f}" ...)`` over every key,
  the line a script would print without ezpz (longer and unaligned).
"""

from __future__ import annotations

import argparse
import random
import statistics
import timeit

from ezpz.utils import SummaryFormatter, format_compact_summary


def make_metrics(n: int, seed: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    names = ["iter", "lr"] + [f"metric_{i}" for i in range(n - 2)]
    metrics: dict[str, float] = {}
    for name in names:
        metrics[name] = rng.random()
        for suffix in ("mean", "max", "min", "std"):
            metrics[f"{name}/{suffix}"] = rng.random() * 0.1
    metrics["iter"] = metrics["iter/mean"] = 1234.0
    return metrics


def per_call_us(fn, repeat: int, number: int) -> float:
    """Median over `repeat` runs of the per-call time, in microseconds."""
    runs = timeit.repeat(fn, repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=10, help="metrics (each + 4 stats)")
    parser.add_argument("--repeat", type=int, default=7, help="timing runs (median kept)")
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing run")
    args = parser.parse_args()

    metrics = make_metrics(args.metrics)
    formatter = SummaryFormatter()
    formatter.format(metrics)  # build the layout once, as History's first update does

    def naive() -> str:
        return " ".join([f"{k}={v:.6f}" for k, v in metrics.items()])

    results = {
        "baseline naive f-string": per_call_us(naive, args.repeat, args.number),
        "SummaryFormatter.format": per_call_us(
            lambda: formatter.format(metrics), args.repeat, args.number
        ),
        "format_compact_summary": per_call_us(
            lambda: format_compact_summary(metrics), args.repeat, args.number // 4
        ),
    }
    base = results["baseline naive f-string"]
    print(f"{len(metrics)} keys ({args.metrics} metrics with /mean /max /min /std)")
    print(f"line: {formatter.format(metrics)}")
    for name, us in results.items():
        print(f"{name:<26} {us:8.2f} us/call   ratio vs baseline {us / base:5.2f}x")


if __name__ == "__main__":
    main()
