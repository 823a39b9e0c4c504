"""Per-part timing of ``History.update()``: where the microseconds go.

``time_parts`` runs the steps of ``History.update()`` one by one on a live
History (the same objects, the same order as ``update()`` uses them) with a
clock read between them, so the parts add up to roughly one update. It reads
History's private parts, so it follows ``ezpz/history/core.py``: when that
changes, change this too. Collective: under MPI every rank calls it.

Parts: normalize (the dict -> keys/values pass), reduce (cross-rank
statistics, incl. the two collectives), store (layout + row append + the
record dict), jsonl (the line, rank 0), tracker (enqueue, rank 0), flush
(the ranks.h5 flusher's per-step check), summary (the console line).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

PARTS = ("normalize", "reduce", "store", "jsonl", "tracker", "flush", "summary")
clock = time.perf_counter_ns


def time_parts(
    hist: Any, calls: int, make_metrics: Callable[[], dict[str, float]], start: int
) -> dict[str, list[int]]:
    """ns per part per call (lists of ``calls`` samples)."""
    out: dict[str, list[int]] = {p: [] for p in PARTS}
    add = [out[p].append for p in PARTS]
    summary = hist._summary
    jsonl = hist._jsonl
    tracker = hist.tracker if hist.rank == 0 else None
    flusher = getattr(hist, "_flush_after_update", None)
    for i in range(calls):
        metrics = make_metrics()
        step = start + i
        t0 = clock()
        now = time.time()
        norm = hist._normalize(metrics)
        t1 = clock()
        flat, layout = hist._reduce(norm, step)
        t2 = clock()
        layout.append(flat, step, now)
        record = dict(metrics) if norm.flat_input and hist._reducer is None else layout.record(flat)
        t3 = clock()
        if jsonl is not None:
            jsonl.write(step, now, record)
        t4 = clock()
        if tracker is not None:
            tracker.log(record, step=step, commit=True)
        t5 = clock()
        if flusher is not None:
            flusher.after_update()
        t6 = clock()
        summary.format(record, 6, plain_numbers=True, keys=layout.full_keys)
        t7 = clock()
        hist._num_updates += 1
        ts = (t0, t1, t2, t3, t4, t5, t6, t7)
        for j in range(len(PARTS)):
            add[j](ts[j + 1] - ts[j])
    return out


def format_parts(samples: dict[str, list[int]]) -> str:
    """``normalize 1.2  reduce 30.1 ...  (sum of medians 45.0 µs)``."""
    med = {p: statistics.median(xs) / 1e3 for p, xs in samples.items() if xs}
    body = "  ".join(f"{p} {v:.2f}" for p, v in med.items())
    return f"{body}  (sum of medians {sum(med.values()):.2f} µs)"
