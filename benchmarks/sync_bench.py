"""``ezpz-history sync`` into a local ``mlflow server`` (sqlite): values per second.

Target (issue 11): 100k steps x 50 keys (5M metric values) in <= 60 s. Three
measurements against the same fresh server, each on its own run:

- ``sync-w1`` / ``sync-w4``: ``ezpz.runs.sync.sync_mlflow`` replaying a
  synthetic JSONL of ``--steps`` x ``--keys`` (log_batch requests of 1000
  values with the sync-cursor tag), strictly one at a time (the default) and
  with ``--workers 4``;
- ``baseline``: the obvious replay, one ``MlflowClient.log_batch`` per JSONL
  row (what ``mlflow.log_metrics(row, step=step)`` in a loop sends);
- ``floor``: pre-built 1000-value ``log_batch`` requests and nothing else:
  what the server itself ingests, the best any client can do.

The time for the full 100k x 50 is extrapolated from the measured rate (the
server's cost per value does not depend on the run's size). Each measurement
runs ``--rounds`` times, interleaved, and the median is reported (a shared
machine's load changes from minute to minute). Run:

    .venv/bin/python benchmarks/sync_bench.py [--steps 2000] [--keys 50] [--baseline-steps 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mlflow_server import MlflowServer  # noqa: E402

TARGET_VALUES = 100_000 * 50
TARGET_S = 60.0
T0 = 1_767_268_800.0


def write_jsonl(path: Path, steps: int, keys: int) -> None:
    with path.open("w") as fh:
        fh.write(json.dumps({"_event": "start", "_time": T0, "run_id": path.stem}) + "\n")
        for i in range(steps):
            row = {"_step": i, "_time": T0 + i * 0.1}
            row.update({f"train/k{k:02d}": i * 1e-3 + k for k in range(keys)})
            fh.write(json.dumps(row) + "\n")


def bench_sync(url: str, path: Path, workers: int) -> tuple[float, int]:
    from ezpz.runs.locate import resolve_run
    from ezpz.runs.sync import read_facts, sync_mlflow

    info = resolve_run(path)
    start = time.perf_counter()
    result = sync_mlflow(
        info, read_facts(info), tracking_uri=url, experiment="bench", workers=workers
    )
    return time.perf_counter() - start, result.values_sent


def bench_baseline(url: str, steps: int, keys: int) -> tuple[float, int]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("bench").experiment_id
    run = client.create_run(exp, run_name="baseline").info.run_id
    start = time.perf_counter()
    for i in range(steps):
        ts = int((T0 + i * 0.1) * 1000)
        client.log_batch(
            run, metrics=[Metric(f"train/k{k:02d}", i * 1e-3 + k, ts, i) for k in range(keys)]
        )
    return time.perf_counter() - start, steps * keys


def bench_floor(url: str, steps: int, keys: int) -> tuple[float, int]:
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name("bench").experiment_id
    run = client.create_run(exp, run_name="floor").info.run_id
    values = [
        Metric(f"train/k{k:02d}", i * 1e-3 + k, int((T0 + i * 0.1) * 1000), i)
        for i in range(steps)
        for k in range(keys)
    ]
    batches = [values[j : j + 1000] for j in range(0, len(values), 1000)]
    start = time.perf_counter()
    for batch in batches:
        client.log_batch(run, metrics=batch)
    return time.perf_counter() - start, len(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--baseline-steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import mlflow  # noqa: F401  (import time is not sync time)

    runs: dict[str, list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="ezpz-sync-bench-") as tmp:
        root = Path(tmp)
        server = MlflowServer(root / "server").start(timeout=600)
        try:
            for r in range(args.rounds):
                for workers in (1, 4):
                    path = root / f"2026-01-01-120000-b{r}w{workers}.jsonl"
                    write_jsonl(path, args.steps, args.keys)
                    runs.setdefault(f"sync-w{workers}", []).append(
                        bench_sync(server.url, path, workers)
                    )
                runs.setdefault("baseline", []).append(
                    bench_baseline(server.url, args.baseline_steps, args.keys)
                )
                runs.setdefault("floor", []).append(bench_floor(server.url, args.steps, args.keys))
        finally:
            server.stop()
    results = {name: sorted(vals)[len(vals) // 2] for name, vals in runs.items()}
    print(f"mlflow server on 127.0.0.1 (sqlite), {args.keys} keys per step")
    for name, (seconds, values) in results.items():
        rate = values / seconds
        full = TARGET_VALUES / rate
        print(
            f"{name:9s} {values:9d} values in {seconds:8.2f} s = {rate:9.0f} values/s"
            f" -> 100k x 50 in {full:8.0f} s"
        )
    sync_rate = results["sync-w1"][1] / results["sync-w1"][0]
    floor_rate = results["floor"][1] / results["floor"][0]
    base_rate = results["baseline"][1] / results["baseline"][0]
    print(f"sync (default, ordered) vs baseline: {sync_rate / base_rate:.1f}x the rate")
    print(f"sync (default, ordered) vs floor: {sync_rate / floor_rate:.2f} of the server's floor")
    verdict = "meets" if TARGET_VALUES / sync_rate <= TARGET_S else "misses"
    print(f"target 100k x 50 in <= {TARGET_S:.0f} s: {verdict} on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
