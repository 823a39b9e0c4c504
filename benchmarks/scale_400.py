"""Statistics at scale: 400 ranks, hierarchical reduction over simulated nodes.

    MPICH_POLLS_BEFORE_YIELD=1 MPICH_ENABLE_HEAVY_YIELD=1 EZPZ_RANKS_PER_NODE=8 \\
        .venv/bin/mpiexec -n 400 .venv/bin/python benchmarks/scale_400.py \\
        --out benchmarks/results/scale_400.txt

400 > 384 (the default ``EZPZ_HIERARCHICAL_THRESHOLD``), so ``History`` takes
the hierarchical path: node-local Reduce over nodes of ``EZPZ_RANKS_PER_NODE``
consecutive ranks, Allreduce among node leaders, node-local Bcast. On a
2-core machine the ranks are heavily oversubscribed (the yield settings stop
MPICH's busy-polling from starving the others), so latencies here measure the
scheduler more than the network; the point is that it completes and agrees
with numpy, with the flat path, and across ranks.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import statistics
import tempfile
import time
from fractions import Fraction

T_PROCESS_START = time.time()

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

KEYS = [f"metric_{i}" for i in range(9)] + ["timestamp"]


def metrics_for(rank: int, step: int) -> dict[str, float]:
    rng = np.random.default_rng(step * 100_003 + rank)
    row = {k: float(rng.normal(i, 1.0 + i)) for i, k in enumerate(KEYS[:-1])}
    row["timestamp"] = 1.7e9 + 0.5 * step + 1e-3 * float(rng.normal())  # mean >> std
    if rank == 0 and step == 5:
        row["eval/acc"] = 0.9  # one rank adds a key once: the slow path at scale
    return row


def exact_std(values: np.ndarray) -> float:
    xs = [Fraction(float(v)) for v in values]
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=None, help="write the summary here (rank 0)")
    args = parser.parse_args()

    from ezpz.history import History
    from ezpz.history.reduce import Reducer

    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    world.Barrier()
    t_init = MPI.Wtime()
    outdir = world.bcast(tempfile.mkdtemp(prefix="ezpz-scale-") if rank == 0 else None)
    hist = History(report_dir=outdir, backends="none", report_enabled=False)
    flat = Reducer(world.Dup(), hierarchical_threshold=size)  # reference: the flat path
    init_s = world.allreduce(MPI.Wtime() - t_init, op=MPI.MAX)
    assert hist.distributed and hist._reducer.hierarchical, "expected the hierarchical path"
    node_size = hist._reducer.topology.node.Get_size()
    threshold = hist._reducer.threshold
    leaders = world.allreduce(1 if hist._reducer.topology.is_leader else 0)

    rows, lat, flat_diff = [], [], 0.0
    world.Barrier()
    t_loop = MPI.Wtime()
    for step in range(args.steps):
        row = metrics_for(rank, step)
        rows.append(row)
        t0 = MPI.Wtime()
        hist.update(row, step=step)
        lat.append(MPI.Wtime() - t0)
        ref = flat.reduce(tuple(row), np.array(list(row.values())), step)
        for i, key in enumerate(ref.keys):
            for s in ("mean", "max", "min", "std"):
                got = float(np.asarray(hist.history[f"{key}/{s}"])[-1])
                want = float(ref.stats[s][i])
                flat_diff = max(flat_diff, abs(got - want) / max(abs(want), 1e-300))
    loop_s = MPI.Wtime() - t_loop

    # Agreement: identical statistics on every rank; equal to numpy on rank 0.
    view = hist.history
    stat_keys = sorted(k for k in view if k.rsplit("/", 1)[-1] in {"mean", "max", "min", "std"})
    digest = hashlib.sha256(b"".join(np.asarray(view[k]).tobytes() for k in stat_keys)).hexdigest()
    digests = world.gather(digest)
    every_rows = world.gather(rows)
    every_lat = world.gather(lat)
    flat_diff = world.reduce(flat_diff, op=MPI.MAX)
    hist.close()
    flat.close()
    if rank != 0:
        return
    worst_mean = worst_std = 0.0
    for step in range(args.steps):
        keys = dict.fromkeys(k for r in every_rows for k in r[step])
        for key in keys:
            vals = np.array([r[step][key] for r in every_rows if key in r[step]])
            col = np.asarray(view[f"{key}/mean"])
            row_idx = step if key in KEYS else 0
            worst_mean = max(
                worst_mean, abs(col[row_idx] - vals.mean()) / max(abs(vals.mean()), 1e-300)
            )
            std = np.asarray(view[f"{key}/std"])[row_idx]
            want = exact_std(vals)  # numpy's std rounds the mean: ~1e-8 off at 1.7e9
            worst_std = max(worst_std, abs(std - want) / want if want else abs(std))
            assert np.asarray(view[f"{key}/max"])[row_idx] == vals.max()
            assert np.asarray(view[f"{key}/min"])[row_idx] == vals.min()
    identical = len(set(digests)) == 1
    lat_max = np.max(np.array(every_lat), axis=0)
    lines = [
        f"ezpz scale run: {size} ranks on {MPI.Get_processor_name()} "
        f"({os.cpu_count()} cores), {args.steps} updates x {len(KEYS)} metrics",
        f"hierarchical: yes (threshold {threshold}, "
        f"simulated nodes of {node_size} ranks -> {leaders} leaders)",
        f"wall: process start -> end {time.time() - T_PROCESS_START:.1f} s; "
        f"History+Reducer construction {init_s:.2f} s; update loop {loop_s:.2f} s",
        f"per-update latency (slowest rank per step): median {statistics.median(lat_max) * 1e3:.1f} ms, "
        f"max {lat_max.max() * 1e3:.1f} ms",
        f"vs numpy mean / exact rational std (rank 0, gathered values): max rel err mean {worst_mean:.2e}, std {worst_std:.2e}; "
        "max/min exact",
        f"vs flat path: max rel diff {flat_diff:.2e}",
        f"identical statistics on all {size} ranks: {identical}",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    assert identical and worst_std <= 1e-9 and worst_mean <= 1e-12 and flat_diff <= 1e-12


if __name__ == "__main__":
    main()
