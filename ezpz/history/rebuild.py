"""The offline rebuild: a run's JSONL log back into a :class:`HistoryStore`.

``History.from_jsonl(path)`` builds a single-process History (no MPI, no
backends) and fills its store with :func:`replay`. The result's ``history``
equals the one of the run that wrote the file, NaN and ±inf included:
statistics (``loss/mean``) land in the group of their key, vectors in the
row of their step. Torn lines of a killed run are skipped with a warning
(by :func:`ezpz.history.jsonl.read_records`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ezpz.history.jsonl import decode_value, read_records
from ezpz.history.keys import STEP_FIELD, TIME_FIELD, group_of
from ezpz.history.store import HistoryStore

__all__ = ["append_record", "replay"]


def replay(path: str | os.PathLike[str], store: HistoryStore, *, first_step: int = 0) -> int:
    """Append every metric record of the JSONL at ``path`` to ``store``.

    A record without ``_step`` gets the running record count (from
    ``first_step``), as ``update()`` would have. Returns the number of records.
    """
    from ezpz.history.resume import fill_store, has_segments, load_run

    if has_segments(path):
        # A run resumed across jobs: a step recorded again by a later segment
        # supersedes the earlier records (ezpz.history.resume, docs/restarts.md).
        run = load_run(path, first_step=first_step)
        fill_store(store, run.groups)
        return run.records
    count = 0
    for record in read_records(path):
        step = record.pop(STEP_FIELD, first_step + count)
        when = record.pop(TIME_FIELD, math.nan)
        append_record(store, int(step), float(when), record)
        count += 1
    return count


def append_record(store: HistoryStore, step: int, when: float, record: dict[str, Any]) -> None:
    """One JSONL record (without ``_step``/``_time``): a row per group it touches."""
    scalars: dict[str, float] = {}
    vectors: list[tuple[str, np.ndarray]] = []
    for key, value in record.items():
        decoded = decode_value(value)
        if isinstance(decoded, list):
            vectors.append((key, np.asarray(decoded, dtype=np.float64)))
        elif decoded is not None:
            scalars[key] = decoded
    rows: dict[str, tuple[list[str], list[float]]] = {}
    for key, value in scalars.items():
        group, name = group_of(key, scalars)
        names, values = rows.setdefault(group, ([], []))
        names.append(name)
        values.append(value)
    row_of = {
        group: store.group(group).append(tuple(names), values, step, when)
        for group, (names, values) in rows.items()
    }
    store.append_vectors(vectors, row_of, step, when)
