"""``ezpz-history watch`` on a large JSONL: time and bytes per frame.

Target (issue 11): a 1 GB JSONL, one frame in <= 1 s, and a 10 GB one must
not be read whole. Writes a synthetic JSONL of ``--size-gb`` (50 keys per row,
statistics included) in a temp dir, then times:

- the first frame (head read, backward tail read of ``--last`` rows, render);
- a frame after 100 new rows were appended (incremental read, render);
- a frame with nothing new.

    .venv/bin/python benchmarks/watch_bench.py [--size-gb 1] [--last 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from ezpz.runs.locate import resolve_run
from ezpz.runs.tail import TailReader
from ezpz.runs.watch import WatchOptions, render_frame

T0 = 1_767_268_800.0


def row(i: int) -> dict:
    out = {"_step": i, "_time": T0 + i * 0.1}
    for k in range(10):
        v = 1.0 / (i + 1) + k
        out.update(
            {
                f"train/m{k}": v,
                f"train/m{k}/mean": v,
                f"train/m{k}/min": v * 0.9,
                f"train/m{k}/max": v * 1.1,
                f"train/m{k}/std": 0.01,
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--last", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ezpz-watch-bench-") as tmp:
        path = Path(tmp) / "2026-01-01-120000-watch0.jsonl"
        block = "".join(json.dumps(row(i)) + "\n" for i in range(5000)).encode()
        target = int(args.size_gb * (1 << 30))
        with path.open("wb") as fh:
            fh.write(
                json.dumps({"_event": "start", "_time": T0, "world_size": 64}).encode() + b"\n"
            )
            written = 0
            while written < target:
                fh.write(block)
                written += len(block)
        size = path.stat().st_size
        info = resolve_run(path)
        opts = WatchOptions(metrics=("m0", "m1"), last=args.last, width=100)
        reader = TailReader(path, keep=args.last)

        def frame() -> tuple[float, int]:
            start = time.perf_counter()
            reader.poll()
            render_frame(info, reader, opts)
            return time.perf_counter() - start, reader.last_read_bytes

        first = frame()
        with path.open("ab") as fh:
            fh.write("".join(json.dumps(row(10**6 + i)) + "\n" for i in range(100)).encode())
        grown = frame()
        idle = frame()
    print(f"JSONL {size / (1 << 30):.2f} GiB, --last {args.last}, 50 keys per row")
    for name, (seconds, nbytes) in (("first frame", first), ("+100 rows", grown), ("idle", idle)):
        print(f"{name:12s} {seconds * 1000:8.1f} ms, read {nbytes / (1 << 20):8.2f} MiB")
    verdict = "meets" if first[0] <= 1.0 else "misses"
    print(f"target <= 1 s per frame: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
