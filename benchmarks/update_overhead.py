"""Single-process ``History.update()`` cost against a plain-Python baseline.

Measures, in one fresh process:
  * median / p99 µs of ``History.update()`` with 10 float metrics, JSONL on,
    summary string built, no backend;
  * the baseline: append 10 floats to lists + ``json.dumps`` + buffered write;
  * ``python -c "import ezpz; ezpz.History"`` wall time (fresh interpreter);
  * bytes per stored value after 1M updates (10 metrics).
Targets (issues 2 and 9): ratio <= 1.0, import <= 0.3 s, <= 10 bytes/value.
Then the median time of each part of an update (benchmarks/_parts.py).

    python benchmarks/update_overhead.py [--calls 20000] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEYS = [f"metric_{i}" for i in range(10)]


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return statistics.median(ordered) / 1e3, p99 / 1e3


def bench_baseline(calls: int, tmp: Path) -> tuple[float, float]:
    columns: dict[str, list[float]] = {k: [] for k in KEYS}
    out = open(tmp / "baseline.jsonl", "w")  # noqa: SIM115 - closed below
    samples = []
    clock = time.perf_counter_ns
    for i in range(calls):
        metrics = {k: random.random() for k in KEYS}
        t0 = clock()
        for k, v in metrics.items():
            columns[k].append(v)
        out.write(json.dumps({"step": i, **metrics}) + "\n")
        samples.append(clock() - t0)
    out.close()
    return _percentiles(samples)


def bench_history(calls: int, tmp: Path) -> tuple[float, float]:
    from ezpz.history import History

    hist = History(report_dir=tmp, backends="none")
    samples = []
    clock = time.perf_counter_ns
    for i in range(calls):
        metrics = {k: random.random() for k in KEYS}
        t0 = clock()
        hist.update(metrics, step=i)
        samples.append(clock() - t0)
    hist.close()
    return _percentiles(samples)


def bench_parts(calls: int, tmp: Path) -> str:
    """Median µs per part of update() (see benchmarks/_parts.py)."""
    from _parts import format_parts, time_parts

    from ezpz.history import History

    hist = History(report_dir=tmp, backends="none")
    time_parts(hist, 500, lambda: {k: random.random() for k in KEYS}, 0)  # warm-up
    parts = time_parts(hist, calls, lambda: {k: random.random() for k in KEYS}, 500)
    hist.close()
    return format_parts(parts)


def best_wall_seconds(code: str, repeats: int = 5) -> float:
    """Best wall time of ``python -c code`` in a fresh interpreter."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def bytes_per_value(updates: int, tmp: Path) -> float:
    from ezpz.history import History

    hist = History(report_dir=tmp, backends="none", jsonl_enabled=False)
    row = {k: 0.5 for k in KEYS}
    for i in range(updates):
        hist.update(row, step=i)
    nbytes = sum(g.nbytes() for g in hist.store.groups.values())
    hist.close()
    return nbytes / (updates * len(KEYS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--memory-updates", type=int, default=1_000_000)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_baseline(args.warmup, tmp)
        bench_history(args.warmup, tmp)
        # Interleave rounds so drift in machine load hits both sides alike.
        base, hist = [], []
        for _ in range(4):
            base.append(bench_baseline(args.calls // 4, tmp))
            hist.append(bench_history(args.calls // 4, tmp))
        b_med = statistics.median(m for m, _ in base)
        b_p99 = statistics.median(p for _, p in base)
        h_med = statistics.median(m for m, _ in hist)
        h_p99 = statistics.median(p for _, p in hist)
        print(f"baseline (lists + json.dumps + write): median {b_med:6.2f} us  p99 {b_p99:6.2f} us")
        print(f"History.update (JSONL + summary)     : median {h_med:6.2f} us  p99 {h_p99:6.2f} us")
        print(f"ratio median {h_med / b_med:.2f}  p99 {h_p99 / b_p99:.2f}   (target <= 1.0)")
        print(f"per part (median us): {bench_parts(args.calls // 4, tmp)}")
        imp = best_wall_seconds("import ezpz; ezpz.History")
        bare = best_wall_seconds("pass")
        print(
            f"import ezpz; ezpz.History: {imp:.3f} s wall (bare python {bare:.3f} s; target <= 0.3 s)"
        )
        if not args.skip_memory:
            bpv = bytes_per_value(args.memory_updates, tmp)
            print(
                f"bytes per stored value after {args.memory_updates:,} updates: {bpv:.2f} (target <= 10)"
            )


if __name__ == "__main__":
    main()
