"""``ezpz-history sync`` into a local ``mlflow server`` (sqlite): values per second, and why.

Target (issue 11): 100k steps x 50 keys (5M metric values) in <= 60 s, i.e.
83,333 values/s. Every measurement runs in this one process against the same
fresh ``mlflow server`` (sqlite store, ``--server-workers`` uvicorn workers),
each on its own run, ``--rounds`` times interleaved; the median is reported
(a shared machine's load changes from minute to minute):

- ``store``: MLflow's own ``SqlAlchemyStore.log_batch`` called in this
  process on a sqlite file, 999 values + 1 tag per call: no HTTP, no client,
  no server. Its CPU time per value is the floor of any sync through MLflow's
  public API (a ``log_batch`` request ends in exactly this call on the
  server). ``cpu ms/kv`` is CPU milliseconds per 1000 values.
- ``floor``: pre-built requests of 999 values + the cursor tag (the shape
  sync sends now), one at a time over HTTP: the server with no client work.
- ``before``: pre-built requests of 1000 values + the cursor tag, the shape
  sync sent before; ``MlflowClient`` splits each into two HTTP requests
  (999 + tag, then 1 value), since MLflow's limit of 1000 counts tags too.
- ``baseline``: the obvious replay, one ``log_batch`` per JSONL row (what
  ``mlflow.log_metrics(row, step=step)`` in a loop sends).
- ``sync-wN``: ``ezpz.runs.sync.sync_mlflow`` replaying a synthetic JSONL of
  ``--steps`` x ``--keys`` with N requests in flight;
- ``sync-old``: the same, one request at a time, with the batch size sync
  used before (1000 values + the tag, which the client splits in two).

For the HTTP measurements, ``server cpu ms/kv`` is the CPU the server's
processes used (from /proc) per 1000 values. The full 100k x 50 time is
extrapolated from each rate (the server's cost per value does not depend on
the run's size). The last lines give the ratios and, from the store's CPU
cost per value, the cores a server would need to reach the target. Run:

    .venv/bin/python benchmarks/sync_bench.py [--steps 600] [--keys 50] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mlflow_server import MlflowServer  # noqa: E402

TARGET_VALUES = 100_000 * 50
TARGET_S = 60.0
T0 = 1_767_268_800.0
PER_REQUEST = 999  # + the cursor tag: MLflow's 1000 entities per log_batch


class Measure:
    """Wall time, this process's CPU and the server's CPU over one measurement."""

    def __init__(self, server_pgid: int | None) -> None:
        self.pgid = server_pgid

    def server_cpu(self) -> float:
        if self.pgid is None:
            return 0.0
        total = 0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == self.pgid:  # field 5: process group
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / tick

    def run(self, fn: Callable[[], int]) -> dict[str, float]:
        s0, c0, w0 = self.server_cpu(), time.process_time(), time.perf_counter()
        values = fn()
        wall = time.perf_counter() - w0
        return {
            "values": values,
            "wall": wall,
            "client_cpu": time.process_time() - c0,
            "server_cpu": self.server_cpu() - s0,
        }


def write_jsonl(path: Path, steps: int, keys: int) -> None:
    with path.open("w") as fh:
        fh.write(json.dumps({"_event": "start", "_time": T0, "run_id": path.stem}) + "\n")
        for i in range(steps):
            row = {"_step": i, "_time": T0 + i * 0.1}
            row.update({f"train/k{k:02d}": i * 1e-3 + k for k in range(keys)})
            fh.write(json.dumps(row) + "\n")


def metric_values(steps: int, keys: int) -> list:
    from mlflow.entities import Metric

    return [
        Metric(f"train/k{k:02d}", i * 1e-3 + k, int((T0 + i * 0.1) * 1000), i)
        for i in range(steps)
        for k in range(keys)
    ]


def bench_store(root: Path, steps: int, keys: int) -> Callable[[], int]:
    """MLflow's SQL store in this process: the server-side floor, without HTTP."""
    import logging

    from mlflow.entities import RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store").setLevel(logging.WARNING)
    root.mkdir(parents=True, exist_ok=True)
    store = SqlAlchemyStore(f"sqlite:///{root / 'store.db'}", str(root / "artifacts"))
    exp = store.create_experiment(f"store-{time.monotonic_ns()}")
    run = store.create_run(exp, "bench", int(T0 * 1000), [], "store").info.run_id
    values = metric_values(steps, keys)
    batches = [values[j : j + PER_REQUEST] for j in range(0, len(values), PER_REQUEST)]

    def go() -> int:
        for n, batch in enumerate(batches):
            store.log_batch(run, batch, [], [RunTag("ezpz.sync.offset", str(n))])
        return len(values)

    return go


def bench_prebuilt(url: str, steps: int, keys: int, per_request: int) -> Callable[[], int]:
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("bench").experiment_id
    run = client.create_run(exp, run_name=f"prebuilt-{per_request}").info.run_id
    values = metric_values(steps, keys)
    batches = [values[j : j + per_request] for j in range(0, len(values), per_request)]

    def go() -> int:
        for n, batch in enumerate(batches):
            client.log_batch(run, metrics=batch, tags=[RunTag("ezpz.sync.offset", str(n))])
        return len(values)

    return go


def bench_baseline(url: str, steps: int, keys: int) -> Callable[[], int]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("bench").experiment_id
    run = client.create_run(exp, run_name="baseline").info.run_id

    def go() -> int:
        for i in range(steps):
            ts = int((T0 + i * 0.1) * 1000)
            client.log_batch(
                run, metrics=[Metric(f"train/k{k:02d}", i * 1e-3 + k, ts, i) for k in range(keys)]
            )
        return steps * keys

    return go


def bench_sync(url: str, path: Path, workers: int, per_request: int | None) -> Callable[[], int]:
    """``sync_mlflow``; ``per_request=1000``: the batch size sync used before (1000 + tag)."""
    import ezpz.runs.sync as sync
    from ezpz.runs.locate import resolve_run

    info = resolve_run(path)

    def go() -> int:
        saved = sync.MAX_METRICS_PER_REQUEST
        sync.MAX_METRICS_PER_REQUEST = per_request or saved
        try:
            result = sync.sync_mlflow(
                info, sync.read_facts(info), tracking_uri=url, experiment="bench", workers=workers
            )
        finally:
            sync.MAX_METRICS_PER_REQUEST = saved
        return result.values_sent

    return go


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--baseline-steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--server-workers", type=int, default=2)
    parser.add_argument("--workers", default="1,2,4", help="sync's requests in flight to try")
    args = parser.parse_args()
    import mlflow
    from mlflow import MlflowClient

    workers = [int(w) for w in args.workers.split(",")]
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="ezpz-sync-bench-") as tmp:
        root = Path(tmp)
        server = MlflowServer(root / "server", workers=args.server_workers).start(timeout=600)
        try:
            MlflowClient(tracking_uri=server.url).create_experiment("bench")
            assert server.proc is not None
            measure = Measure(server.proc.pid)  # its own session: pgid == pid
            local = Measure(None)
            for r in range(args.rounds):
                plan: list[tuple[str, Measure, Callable[[], int]]] = [
                    ("store", local, bench_store(root / "store", args.steps, args.keys)),
                    ("floor", measure, bench_prebuilt(server.url, args.steps, args.keys, 999)),
                    ("before", measure, bench_prebuilt(server.url, args.steps, args.keys, 1000)),
                    (
                        "baseline",
                        measure,
                        bench_baseline(server.url, args.baseline_steps, args.keys),
                    ),
                ]
                path = root / f"2026-01-01-120000-r{r}old.jsonl"
                write_jsonl(path, args.steps, args.keys)
                plan.append(("sync-old", measure, bench_sync(server.url, path, 1, 1000)))
                for w in workers:
                    path = root / f"2026-01-01-120000-r{r}w{w}.jsonl"
                    write_jsonl(path, args.steps, args.keys)
                    plan.append((f"sync-w{w}", measure, bench_sync(server.url, path, w, None)))
                for name, meter, fn in plan:
                    runs.setdefault(name, []).append(meter.run(fn))
                    print(f"  round {r}: {name} done", file=sys.stderr, flush=True)
        finally:
            server.stop()

    def median(name: str) -> dict[str, float]:
        rates = [m["values"] / m["wall"] for m in runs[name]]
        pick = runs[name][rates.index(statistics.median_low(rates))]
        return {**pick, "rate": pick["values"] / pick["wall"]}

    results = {name: median(name) for name in runs}
    print(
        f"mlflow {mlflow.__version__}, `mlflow server` (uvicorn, --workers "
        f"{args.server_workers}, sqlite) on 127.0.0.1; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}; {args.keys} keys per step"
    )
    print(
        f"{'':10s} {'values':>8s} {'wall s':>8s} {'values/s':>9s} {'100k x 50':>10s}"
        f" {'client cpu ms/kv':>17s} {'server cpu ms/kv':>17s}"
    )
    for name, m in results.items():
        kv = m["values"] / 1000
        server_cpu = f"{m['server_cpu'] / kv * 1000:17.0f}" if name != "store" else f"{'-':>17s}"
        print(
            f"{name:10s} {m['values']:8.0f} {m['wall']:8.2f} {m['rate']:9.0f}"
            f" {TARGET_VALUES / m['rate']:9.0f}s {m['client_cpu'] / kv * 1000:17.0f} {server_cpu}"
        )
    best = max((n for n in results if n.startswith("sync-")), key=lambda n: results[n]["rate"])
    rate = {n: m["rate"] for n, m in results.items()}
    print(f"sync-w1 / baseline: {rate['sync-w1'] / rate['baseline']:.2f}x")
    print(
        f"sync-w1 / sync-old (1000 values + tag per call): {rate['sync-w1'] / rate['sync-old']:.2f}x"
    )
    print(
        f"sync-w1 / before (1000 + tag, split in 2 requests): {rate['sync-w1'] / rate['before']:.2f}x"
    )
    print(f"floor (999 + tag) / before (1000 + tag): {rate['floor'] / rate['before']:.2f}x")
    print(
        f"{best} / sync-w1: {rate[best] / rate['sync-w1']:.2f}x;  {best} / floor: {rate[best] / rate['floor']:.2f}"
    )
    store = results["store"]
    store_cpu = store["client_cpu"] / store["values"]  # CPU seconds per value, in process
    print(
        f"store floor: {store_cpu * 1e6:.0f} us CPU per value = {1 / store_cpu:.0f} values/s per "
        f"busy core; 100k x 50 needs {TARGET_VALUES * store_cpu:.0f} CPU s in MLflow's SQL store "
        f"alone: >= {TARGET_VALUES * store_cpu / TARGET_S:.0f} cores writing concurrently for "
        f"{TARGET_S:.0f} s"
    )
    verdict = "meets" if TARGET_VALUES / rate[best] <= TARGET_S else "misses"
    print(f"target 100k x 50 in <= {TARGET_S:.0f} s: {verdict} on this machine ({best})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
