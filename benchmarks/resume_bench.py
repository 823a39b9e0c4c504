"""Time to resume a long run: ``History(resume=run_id)`` over 100k steps x 10 metrics.

Run under MPI (the resumed History is collective; rank 0 reads the JSONL and
broadcasts the rows)::

    mpiexec -n 2 python benchmarks/resume_bench.py [--steps 100000] [--metrics 10]

Rank 0 first writes the JSONL a 2-rank run with statistics writes (raw values
and ``/mean`` ``/max`` ``/min`` ``/std`` of every metric, a ``start`` event),
with ezpz's own JsonlWriter. Then every rank constructs the resumed History
(timed, the slowest rank counts) and reads ``history`` back once. Baselines
measured in the same run on the same file: Python's ``json.loads`` and
``orjson.loads`` of every line (parsing only, no store). Target: <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from pathlib import Path


def write_run(path: Path, steps: int, metrics: int, world_size: int) -> None:
    from ezpz.history.jsonl import JsonlWriter

    writer = JsonlWriter(path, overwrite=True)
    writer.write_event(
        "start", time.time(), run_id=path.stem, world_size=world_size, resumed=False, config=None
    )
    names = [f"train/m{i}" for i in range(metrics)]
    t0 = time.time()
    for step in range(steps):
        record: dict[str, float] = {}
        for i, key in enumerate(names):
            record[key] = math.sin(step * 1e-3 + i)
        for i, key in enumerate(names):
            base = math.sin(step * 1e-3 + i)
            record[f"{key}/mean"] = base + 0.05
            record[f"{key}/max"] = base + 0.1
            record[f"{key}/min"] = base
            record[f"{key}/std"] = 0.05
        writer.write(step, t0 + step * 0.1, record)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from mpi4py import MPI

    import ezpz  # noqa: F401 - import cost outside the timings
    from ezpz.history import History

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    folder = Path(comm.bcast(tempfile.mkdtemp(prefix="ezpz-resume-") if rank == 0 else None))
    run_id = "2026-01-01-000000-000000"
    path = folder / f"{run_id}.jsonl"
    if rank == 0:
        write_run(path, args.steps, args.metrics, size)
    comm.Barrier()
    size_mb = path.stat().st_size / 1e6 if rank == 0 else 0.0

    baseline_json = baseline_orjson = math.nan
    if rank == 0:
        import orjson

        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            for line in fh:
                json.loads(line)
        baseline_json = time.perf_counter() - t0
        t0 = time.perf_counter()
        with open(path, "rb") as fh:
            for line in fh:
                orjson.loads(line)
        baseline_orjson = time.perf_counter() - t0
    comm.Barrier()

    times = []
    for _ in range(args.repeat):
        comm.Barrier()
        t0 = time.perf_counter()
        hist = History(report_dir=folder, resume=run_id, backends="none", jsonl_enabled=False)
        elapsed = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        rows = len(hist.store.group("train").steps)
        hist.close()
        times.append(elapsed)
        assert rows == args.steps, rows
    if rank == 0:
        best = min(times)
        print(
            f"resume: {args.steps} steps x {args.metrics} metrics (+4 statistics each), "
            f"{size} ranks, JSONL {size_mb:.0f} MB"
        )
        print(
            f"  History(resume=...)          {best:7.2f} s  (best of {args.repeat}; target <= 3 s)"
        )
        print(f"  baseline json.loads per line {baseline_json:7.2f} s  (parse only)")
        print(f"  baseline orjson.loads        {baseline_orjson:7.2f} s  (parse only)")
        print(f"  resume / json.loads          {best / baseline_json:7.2f}x")
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
