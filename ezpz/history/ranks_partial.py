"""Per-rank values a signal saved without the other ranks, merged on resume.

``ranks.h5`` is written collectively (periodic flushes and finalize), and a
signal handler must not call a collective. So on a signal each rank writes
the raw values it has not flushed yet to a side file of its own,
``{report_dir}/{run_id}-ranks.{rank}.partial.npz`` (a few arrays, written
atomically), and the next segment (``History(resume=...)``) merges these
files into the run's staging file ``{report_dir}/{run_id}-ranks.h5`` before
it continues flushing there. ``finalize()`` then publishes one ``ranks.h5``
holding every rank's values of every segment. What is lost is only what a
SIGKILL (or a node failure) took before the next periodic flush: at most
``EZPZ_RANKS_FLUSH_EVERY`` steps (default 1000), or with fast steps the last
``EZPZ_RANKS_FLUSH_SECONDS`` (default 10 s), of the ranks other than 0
(rank 0's raw values are in the JSONL and are restored from there).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_PARTIAL_RE = re.compile(r"-ranks\.(\d+)\.partial\.npz$")


def staging_path(report_dir: str | os.PathLike[str], run_id: str) -> Path:
    """Where the periodic flushes of ``ranks_h5`` write (same rule as its RankFlusher)."""
    return Path(report_dir).resolve() / f"{run_id}-ranks.h5"


def partial_path(report_dir: str | os.PathLike[str], run_id: str, rank: int) -> Path:
    return Path(report_dir).resolve() / f"{run_id}-ranks.{rank}.partial.npz"


def save_partial(
    report_dir: str | os.PathLike[str],
    run_id: str,
    rank: int,
    store: Any,
    flushed: Mapping[str, int],
) -> Path | None:
    """Write this rank's unflushed raw rows (no MPI). Returns the file, or None if nothing to save."""
    from ezpz.history.ranks_h5 import _raw_names, _read_rows

    meta: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for i, (gname, g) in enumerate(store.groups.items()):
        start, n = int(flushed.get(gname, 0)), len(g)
        if n <= start:
            continue
        names = _raw_names(g)
        steps, times, cols = _read_rows(g, names, start, n)
        meta.append({"group": gname, "names": names, "start": start, "rows": n - start})
        arrays[f"s{i}"] = np.asarray(steps, dtype=np.int64)
        arrays[f"t{i}"] = np.asarray(times, dtype=np.float64)
        arrays[f"v{i}"] = (
            np.stack([np.asarray(c, dtype=np.float64) for c in cols])
            if cols
            else np.zeros((0, n - start))
        )
        meta[-1]["index"] = i
    if not meta:
        return None
    path = partial_path(report_dir, run_id, rank)
    from ezpz._files import atomic_path

    payload = json.dumps({"rank": rank, "run_id": run_id, "groups": meta})
    arrays["meta"] = np.frombuffer(payload.encode(), dtype=np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return path


def _read_partial(path: Path) -> tuple[int, list[tuple[str, list[str], int, Any, Any, Any]]]:
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        out = []
        for g in meta["groups"]:
            i = g["index"]
            out.append(
                (
                    g["group"],
                    list(g["names"]),
                    int(g["start"]),
                    data[f"s{i}"],
                    data[f"t{i}"],
                    data[f"v{i}"],
                )
            )
    return int(meta["rank"]), out


@dataclass
class RanksState:
    """What rank 0 found in the staging file after merging (broadcast to every rank)."""

    exists: bool = False
    plan: dict[str, tuple[str, dict[str, str]]] = field(
        default_factory=dict
    )  # group -> (h5, {key: var})
    rows: dict[str, list[int]] = field(default_factory=dict)  # group -> rows per rank
    world_size: int | None = None


def _plan_from_file(f: Any) -> dict[str, tuple[str, dict[str, str]]]:
    plan: dict[str, tuple[str, dict[str, str]]] = {}
    for h5name, h5g in f.items():
        if not hasattr(h5g, "attrs") or "group" not in h5g.attrs:
            continue
        group = str(h5g.attrs["group"])
        variables = {}
        for var, ds in h5g.items():
            key = ds.attrs.get("key")
            if key is not None:
                variables[str(key)] = var
        plan[group] = (h5name, variables)
    return plan


def merge_partials(
    report_dir: str | os.PathLike[str],
    run_id: str,
    world_size: int,
    keep_rows: Mapping[str, int] | None = None,
) -> RanksState:
    """Rank 0, serial HDF5: fold the partial files into the staging file, then delete them.

    ``keep_rows``: group -> rows the resumed store holds; rows beyond are cut
    (rows of a segment the JSONL does not have). A staging file written at
    another world size is kept aside as ``{run_id}-ranks.ws{N}.h5``.
    """
    from ezpz.history.ranks_h5 import _ensure_layout, _Plan, _write_rank_rows

    staging = staging_path(report_dir, run_id)
    folder = staging.parent
    partials = sorted(
        p for p in folder.glob(f"{run_id}-ranks.*.partial.npz") if _PARTIAL_RE.search(p.name)
    )
    state = RanksState()
    if not staging.exists() and not partials:
        return state
    import h5py

    if staging.exists():
        with h5py.File(staging, "r") as f:
            old_size = int(f.attrs.get("world_size", world_size))
        if old_size != world_size:
            aside = folder / f"{run_id}-ranks.ws{old_size}.h5"
            os.replace(staging, aside)
            logger.warning(
                "ezpz: resumed at %d ranks, the run had %d: its per-rank values so far are kept "
                "in %s; ranks.h5 holds the ranks of this world size from here on",
                world_size,
                old_size,
                aside,
            )
    plan = _Plan()
    with h5py.File(staging, "a") as f:
        existing = _plan_from_file(f)
        for group, (h5name, variables) in existing.items():
            plan.group_names[group] = h5name
            plan._taken_groups.add(h5name)
            plan.var_names[group] = dict(variables)
        loaded = []
        for path in partials:
            try:
                rank, groups = _read_partial(path)
            except Exception as exc:  # a half-written file cannot exist (atomic), but be safe
                logger.warning("ezpz: cannot read %s (%s); skipped", path, exc)
                continue
            if rank >= world_size:
                logger.warning("ezpz: %s is from rank %d of a larger run; skipped", path, rank)
                continue
            loaded.append((rank, groups))
            for gname, names, _start, _s, _t, _v in groups:
                plan.add(gname, names)
        widths: dict[str, int] = {}
        for group, (h5name, _vars) in existing.items():
            widths[group] = f[h5name]["step"].shape[1]
        for _rank, groups in loaded:
            for gname, _names, start, steps, _t, _v in groups:
                widths[gname] = max(widths.get(gname, 0), start + len(steps))
        for group in plan.group_names:
            widths.setdefault(group, 0)
        _ensure_layout(f, plan, widths, world_size)
        for rank, groups in loaded:
            for gname, names, start, steps, times, values in groups:
                cols = {name: values[j] for j, name in enumerate(names)}
                _write_rank_rows(f, plan, gname, rank, start, steps, times, cols)
                rows = f[plan.group_names[gname]]["rows"]
                rows[rank] = max(int(rows[rank]), start + len(steps))
        if keep_rows is not None:
            for group, h5name in plan.group_names.items():
                keep = int(keep_rows.get(group, 0))
                h5g = f[h5name]
                if h5g["step"].shape[1] > keep:
                    for var in h5g:
                        if var != "rows":
                            h5g[var].resize(keep, axis=1)
                    h5g["rows"][:] = np.minimum(h5g["rows"][:], keep)
        f.attrs["world_size"] = int(world_size)
        f.attrs["run_id"] = str(run_id)
        f.attrs["complete"] = 0
        state.exists = True
        state.world_size = world_size
        for group, h5name in plan.group_names.items():
            state.plan[group] = (h5name, dict(plan.var_names[group]))
            state.rows[group] = [int(x) for x in f[h5name]["rows"][:]]
    for path in partials:
        path.unlink(missing_ok=True)
    return state


def continue_flusher(flusher: Any, state: RanksState, rank: int, store: Any) -> None:
    """Point this rank's RankFlusher at the merged staging file.

    Rows before the resume are in the file already for ranks other than 0
    (their own values; a SIGKILL gap stays NaN). Rank 0 rewrites its rows
    from where the file ends, from the store the JSONL rebuilt.
    """
    if flusher is None or not state.exists:
        return
    from ezpz.history.ranks_h5 import _Plan

    plan = _Plan()
    for group, (h5name, variables) in state.plan.items():
        plan.group_names[group] = h5name
        plan._taken_groups.add(h5name)
        plan.var_names[group] = dict(variables)
    flusher.plan = plan
    flusher._created = True
    for gname, g in store.groups.items():
        n = len(g)
        if rank == 0:
            in_file = state.rows.get(gname, [0])
            flusher.flushed[gname] = min(int(in_file[0]) if in_file else 0, n)
        else:
            flusher.flushed[gname] = n
