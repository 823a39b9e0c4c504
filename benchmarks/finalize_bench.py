"""finalize() wall time and peak RSS: 10 metrics x 10k and x 100k steps.

Each case runs in a fresh subprocess: the child records the history with
``History.update`` (not timed), then times ``finalize()`` with plots and
report on, and reports the wall time and the peak RSS growth during
finalize (process peak minus RSS just before finalize) plus the process peak.
A baseline measured in the same run, the cost of writing the same numbers
with ``numpy.save``, puts the dataset stage in proportion.

    .venv/bin/python benchmarks/finalize_bench.py            # 10k and 100k
    .venv/bin/python benchmarks/finalize_bench.py --steps 10000

Targets (issue 5): <= 3 s and <= 400 MB at 10k steps; <= 10 s at 100k.

``--flush`` also measures what the periodic per-rank flushes (ranks.h5) add to
the training loop: 2 ranks under mpiexec, the same updates with
``EZPZ_RANKS_FLUSH_EVERY=0`` (baseline, no periodic flush) and with the
default interval.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

TARGETS = {10_000: (3.0, 400.0), 100_000: (10.0, None)}

CHILD = textwrap.dedent(
    """
    import json, logging, math, os, resource, sys, tempfile, time
    import numpy as np
    steps, metrics, outdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with_stats = sys.argv[4] == "1"

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    from ezpz.history import History
    hist = History(report_dir=os.path.join(outdir, "hist"), backends="none")
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(steps, metrics))
    names = [f"train/m{j}" for j in range(metrics)]
    for i in range(steps):
        row = noise[i]
        m = {names[j]: math.exp(-i / steps) + 0.1 * row[j] for j in range(metrics)}
        if with_stats:  # what a distributed run stores: mean/max/min/std per metric
            for n, v in list(m.items()):
                m[n + "/mean"], m[n + "/max"], m[n + "/min"], m[n + "/std"] = v, v + 0.1, v - 0.1, 0.05
        hist.update(m, step=i)
    # baseline: the same numbers written with numpy.save
    t0 = time.perf_counter()
    np.save(os.path.join(outdir, "baseline.npy"), np.stack([hist.history[n] for n in names]))
    baseline = time.perf_counter() - t0
    before = rss_mb()
    logging.basicConfig(level=logging.INFO, format="    %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()
    hist.finalize(outdir=os.path.join(outdir, "out"))
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "rss_before_mb": before, "peak_mb": peak_mb(),
                      "baseline_s": baseline}))
    """
)


FLUSH_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from mpi4py import MPI
    from ezpz.history import History
    steps, outdir = int(sys.argv[1]), sys.argv[2]
    hist = History(report_dir=outdir, backends="none", jsonl_enabled=False)
    names = [f"train/m{j}" for j in range(10)]
    MPI.COMM_WORLD.Barrier()
    t0 = time.perf_counter()
    for i in range(steps):
        hist.update({n: float(i + j) for j, n in enumerate(names)}, step=i)
    dt = MPI.COMM_WORLD.allreduce(time.perf_counter() - t0, op=MPI.MAX)
    if hist.rank == 0:
        print(json.dumps({"loop_s": dt}))
    """
)


def run_flush_case(steps: int, every: int, driver: str) -> float:
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    env = {**os.environ, "EZPZ_RANKS_FLUSH_EVERY": str(every), "EZPZ_RANKS_H5_DRIVER": driver}
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    with tempfile.TemporaryDirectory(prefix="ezpz-bench-") as tmp:
        cmd = [mpiexec, "-n", "2", sys.executable, "-c", FLUSH_CHILD, str(steps), tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"flush case failed:\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])["loop_s"]


def flush_overhead(steps: int) -> None:
    import h5py

    drivers = ["gather"] + (["mpio"] if h5py.get_config().mpi else [])
    print(f"\nperiodic ranks.h5 flush: 2 ranks, 10 metrics, {steps} updates")
    base = run_flush_case(steps, 0, "gather")
    print(f"  no periodic flush (baseline): {base:.2f} s  ({1e6 * base / steps:.0f} us/update)")
    for driver in drivers:
        t = run_flush_case(steps, 1000, driver)
        print(f"  every 1000 updates, {driver:>6}: {t:.2f} s  ratio {t / base:.2f}x")


def run_case(steps: int, metrics: int, stats: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="ezpz-bench-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(steps), str(metrics), tmp, "1" if stats else "0"],
            capture_output=True,
            text=True,
            env={**os.environ, "MPLBACKEND": "Agg"},
        )
        if proc.returncode != 0:
            raise SystemExit(f"case {steps} steps failed:\n{proc.stderr}")
        stages = [line for line in proc.stderr.splitlines() if "finalize [" in line]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["stages"] = stages
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--stages", action="store_true", help="print per-stage times")
    parser.add_argument(
        "--stats",
        action="store_true",
        help="also store /mean /max /min /std per metric, as a distributed run does",
    )
    parser.add_argument(
        "--flush", type=int, default=0, metavar="N", help="also time N updates on 2 ranks"
    )
    args = parser.parse_args()
    what = "with cross-rank statistics (5 columns per metric)" if args.stats else "raw values only"
    print(f"finalize() benchmark: {args.metrics} metrics, {what}, plots + report on")
    print(
        f"{'steps':>8} {'wall s':>8} {'target':>8} {'peak MB':>8} {'+RSS MB':>8} "
        f"{'target':>8} {'npy s':>7} {'x npy':>7}"
    )
    ok = True
    for steps in args.steps:
        r = run_case(steps, args.metrics, args.stats)
        wall_target, mem_target = TARGETS.get(steps, (None, None))
        growth = r["peak_mb"] - r["rss_before_mb"]
        ratio = r["wall_s"] / r["baseline_s"] if r["baseline_s"] > 0 else float("inf")
        wt = f"<={wall_target:g}" if wall_target else "-"
        mt = f"<={mem_target:g}" if mem_target else "-"
        print(
            f"{steps:>8} {r['wall_s']:>8.2f} {wt:>8} {r['peak_mb']:>8.0f} {growth:>8.0f} "
            f"{mt:>8} {r['baseline_s']:>7.3f} {ratio:>7.0f}"
        )
        if args.stages:
            print("\n".join(r["stages"]))
        if wall_target and r["wall_s"] > wall_target:
            ok = False
        if mem_target and r["peak_mb"] > mem_target:
            ok = False
    print("targets met" if ok else "TARGETS MISSED")
    print("peak MB: the process's peak RSS (Python + numpy + xarray + matplotlib + the data);")
    print("+RSS MB: peak minus RSS just before finalize (what finalize itself adds at most)")
    if args.flush:
        flush_overhead(args.flush)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
