"""Distributed ``History.update()`` cost against the raw packed collectives.

Run under MPI (all numbers from one job, rounds interleaved so load drift hits
every variant alike):

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/update_mpi.py
    .venv/bin/mpiexec -n 4 .venv/bin/python benchmarks/update_mpi.py

Measures on every rank, reports rank 0 (and the slowest rank's median):
  * ``History.update()`` with 10 float metrics (statistics on, JSONL on rank 0,
    summary string, no backend), and the same with ``summarize=False``; and,
    for information, with ``iter`` and a learning-rate schedule added (values
    every rank shares, that change every step);
  * ``Reducer.reduce()`` alone, given a list of floats as History gives it;
  * the raw cost of the same two packed ``Allreduce`` calls (MAX then SUM) on
    float64 buffers of the sizes the reducer uses, and of the same pair issued
    as two ``Iallreduce`` + one ``Waitall`` (how the reducer issues them);
  * the single-process baseline of issue 2: append 10 floats to lists +
    ``json.dumps`` + buffered write.
Prints ratio = update / (allreduce + baseline); targets (issue 9): <= 2.5, and
<= 1.8 for ``update(..., summarize=False)``. Then the median time of each part
of an update (benchmarks/_parts.py).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _parts import format_parts, time_parts
from mpi4py import MPI

KEYS = [f"metric_{i}" for i in range(10)]
clock = time.perf_counter_ns


def _stats(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) / 1e3, ordered[int(0.99 * (len(ordered) - 1))] / 1e3


def bench_raw(comm: MPI.Comm, calls: int) -> list[int]:
    m = len(KEYS)
    smax, rmax = np.random.random(5 + 2 * m), np.empty(5 + 2 * m)
    ssum, rsum = np.random.random(5 * m), np.empty(5 * m)
    out = []
    for _ in range(calls):
        t0 = clock()
        comm.Allreduce(smax, rmax, MPI.MAX)
        comm.Allreduce(ssum, rsum, MPI.SUM)
        out.append(clock() - t0)
    return out


def bench_raw_pair(comm: MPI.Comm, calls: int) -> list[int]:
    """The same two reductions in flight together, as the reducer issues them."""
    m = len(KEYS)
    smax, rmax = np.random.random(5 + 2 * m), np.empty(5 + 2 * m)
    ssum, rsum = np.random.random(5 * m), np.empty(5 * m)
    out = []
    for _ in range(calls):
        t0 = clock()
        MPI.Request.Waitall(
            [comm.Iallreduce(smax, rmax, MPI.MAX), comm.Iallreduce(ssum, rsum, MPI.SUM)]
        )
        out.append(clock() - t0)
    return out


def bench_baseline(calls: int, tmp: Path, rng: np.random.Generator) -> list[int]:
    columns: dict[str, list[float]] = {k: [] for k in KEYS}
    out = []
    with open(tmp / f"baseline-{MPI.COMM_WORLD.Get_rank()}.jsonl", "w") as fh:
        for i in range(calls):
            metrics = dict(zip(KEYS, rng.random(len(KEYS)).tolist(), strict=True))
            t0 = clock()
            for k, v in metrics.items():
                columns[k].append(v)
            fh.write(json.dumps({"step": i, **metrics}) + "\n")
            out.append(clock() - t0)
    return out


def bench_reducer(reducer, calls: int, rng: np.random.Generator, start: int) -> list[int]:
    keys = tuple(KEYS)
    out = []
    for i in range(calls):
        values = rng.random(len(keys)).tolist()  # as History passes them
        t0 = clock()
        reducer.reduce(keys, values, start + i)
        out.append(clock() - t0)
    return out


def bench_history(
    hist,
    calls: int,
    rng: np.random.Generator,
    start: int,
    summarize: bool = True,
    training: bool = False,
) -> list[int]:
    out = []
    for i in range(calls):
        metrics = dict(zip(KEYS, rng.random(len(KEYS)).tolist(), strict=True))
        if training:  # as a training loop logs them: a counter, a learning-rate schedule
            metrics["iter"] = float(start + i)
            metrics["lr"] = 3e-4 * (0.55 + 0.45 * math.cos((start + i) / 20000))
        t0 = clock()
        hist.update(metrics, step=start + i, summarize=summarize)
        out.append(clock() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="timed calls per variant")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", default=None, help="append the report to this file (rank 0)")
    args = parser.parse_args()

    from ezpz.history import History
    from ezpz.history.reduce import Reducer

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    comm = world.Dup()
    rng = np.random.default_rng(rank)
    tmpdir = world.bcast(tempfile.mkdtemp(prefix="ezpz-bench-") if rank == 0 else None)
    tmp = Path(tmpdir)
    hist = History(report_dir=tmp, backends="none", report_enabled=False)
    training_hist = History(report_dir=tmp, backends="none", report_enabled=False)
    assert hist.distributed, "run under mpiexec -n 2 or more"
    reducer = Reducer(comm)
    per = max(args.calls // args.rounds, 1)
    # Warm-up: first-step layout agreement, caches, MPI connections.
    bench_raw(comm, 200)
    bench_reducer(reducer, 200, rng, 0)
    bench_history(hist, 200, rng, 0)
    bench_history(training_hist, 200, rng, 0, training=True)
    names = (
        "raw 2x Allreduce (MAX+SUM)",
        "raw Iallreduce pair+Waitall",
        "baseline (lists+json+write)",
        "Reducer.reduce",
        "History.update (stats on)",
        "update(summarize=False)",
        "update(+iter, lr schedule)",
    )
    samples: dict[str, list[int]] = {n: [] for n in names}
    best: dict[str, float] = dict.fromkeys(names, float("inf"))  # least-disturbed round
    round_ratios: list[float] = []  # update / (allreduce + baseline) within one round
    step = 200
    for _ in range(args.rounds):
        world.Barrier()
        got = {names[0]: bench_raw(comm, per)}
        got[names[1]] = bench_raw_pair(comm, per)
        got[names[2]] = bench_baseline(per, tmp, rng)
        world.Barrier()
        got[names[3]] = bench_reducer(reducer, per, rng, step)
        world.Barrier()
        got[names[4]] = bench_history(hist, per, rng, step)
        step += per
        world.Barrier()
        got[names[5]] = bench_history(hist, per, rng, step, summarize=False)
        step += per
        world.Barrier()
        got[names[6]] = bench_history(training_hist, per, rng, step, training=True)
        step += per
        med = {n: _stats(xs)[0] for n, xs in got.items()}
        round_ratios.append(med[names[4]] / (med[names[0]] + med[names[2]]))
        for n, xs in got.items():
            samples[n] += xs
            best[n] = min(best[n], med[n])
    # Where an update's time goes (every rank in lockstep; rank 0 reported).
    parts: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        world.Barrier()
        for name, xs in time_parts(
            hist, per, lambda: dict(zip(KEYS, rng.random(len(KEYS)).tolist(), strict=True)), step
        ).items():
            parts.setdefault(name, []).extend(xs)
        step += per
    hist.close()
    training_hist.close()
    reducer.close()

    rows = {n: _stats(xs) for n, xs in samples.items()}
    medians = world.gather({k: v[0] for k, v in rows.items()})
    if rank != 0:
        return
    lines = [f"ranks={size}  metrics={len(KEYS)}  calls/variant={per * args.rounds}  (rank 0; µs)"]
    for name, (med, p99) in rows.items():
        worst = max(m[name] for m in medians)
        lines.append(
            f"  {name:30s} median {med:8.2f}  p99 {p99:8.2f}  best-round median "
            f"{best[name]:8.2f}  slowest-rank median {worst:8.2f}"
        )
    r_med, r_p99 = rows["raw 2x Allreduce (MAX+SUM)"]
    b_med, b_p99 = rows["baseline (lists+json+write)"]
    u_med, u_p99 = rows["History.update (stats on)"]
    d_med, _ = rows["Reducer.reduce"]
    lines.append(f"  reducer / raw allreduce             : {d_med / r_med:.2f}")
    per_round = statistics.median(round_ratios)
    lines.append(
        f"  ratio update / (allreduce + baseline): median {u_med / (r_med + b_med):.2f}  "
        f"p99 {u_p99 / (r_p99 + b_p99):.2f}  per-round median {per_round:.2f} "
        f"(min {min(round_ratios):.2f})   (target <= 2.5)"
    )
    n_med, _ = rows["update(summarize=False)"]
    lines.append(
        f"  ratio update(summarize=False) / (allreduce + baseline): median "
        f"{n_med / (r_med + b_med):.2f}   (target <= 1.8)"
    )
    lines.append(f"  per part (median µs): {format_parts(parts)}")
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
