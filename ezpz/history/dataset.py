"""One ``xarray.Dataset`` per metric group, and writing it to HDF5.

Layout (see docs/finalize.md): dimension ``draw``; coordinates ``step``
(int64) and ``time`` (float64) on it; one float64 data variable per scalar
column with a netCDF-safe name and attributes ``key``/``full_key``/``base``/
``stat``; vector metrics as ``(draw, <name>_chain)``. xarray is imported
inside the functions so that ``import ezpz`` never pays for it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ezpz.history.keys import join_key, split_stat

if TYPE_CHECKING:
    import xarray as xr

    from ezpz.history.store import GroupStore

logger = logging.getLogger(__name__)

# Names the dataset itself uses; a metric with one of them gets a suffix.
RESERVED_NAMES = frozenset({"draw", "step", "time"})
UNPREFIXED_FILE_STEM = "history"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]")


def warmup_count(n: int, warmup: float) -> int:
    """How many leading samples of ``n`` to drop for ``warmup``.

    ``warmup < 1`` is a fraction of ``n`` (rounded down), ``warmup >= 1`` a
    count. At least one sample is always kept, so statistics and plots are
    never empty when there is data. Negative or NaN ``warmup`` is an error.
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int | float | np.number):
        raise TypeError(f"warmup must be a number (fraction < 1 or count >= 1), got {warmup!r}")
    w = float(warmup)
    if math.isnan(w) or w < 0:
        raise ValueError(f"warmup must be >= 0 (fraction < 1 or count >= 1), got {warmup!r}")
    if n <= 0:
        return 0
    drop = int(n * w) if w < 1 else int(w) if math.isfinite(w) else n
    return max(0, min(drop, n - 1))


def safe_name(name: str) -> str:
    """``name`` made valid as a netCDF/HDF5 variable name (no ``/``, starts with a letter)."""
    out = _UNSAFE.sub("_", name)
    if not out or not out[0].isalpha():
        out = "v" + out
    return out


class _NameAllocator:
    """Unique safe names, allocated in call order (so deterministic)."""

    def __init__(self) -> None:
        self.taken: set[str] = set(RESERVED_NAMES)

    def __call__(self, name: str) -> str:
        base = safe_name(name)
        candidate, i = base, 1
        while candidate in self.taken:
            i += 1
            candidate = f"{base}_{i}"
        self.taken.add(candidate)
        return candidate


def group_file_name(group: str) -> str:
    """``train`` -> ``train.h5``; the unprefixed group -> ``history.h5``."""
    return f"{safe_name(group) if group else UNPREFIXED_FILE_STEM}.h5"


def variable_attrs(group: str, key: str, names: list[str]) -> dict[str, Any]:
    """The attributes saying which metric (and statistic) a variable holds."""
    stat = split_stat(key, names)
    base, suffix = stat if stat is not None else (key, "")
    return {"key": key, "full_key": join_key(group, key), "base": base, "stat": suffix}


def run_attrs(
    *,
    run_id: str,
    world_size: int,
    group: str,
    config: Mapping[str, Any] | None = None,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Dataset attributes: all strings/ints, as netCDF attributes must be."""
    from ezpz import __version__

    return {
        "run_id": str(run_id),
        "run_name": str(run_name if run_name is not None else run_id),
        "world_size": int(world_size),
        "ezpz_version": str(__version__),
        "group": group,
        "config": json.dumps(dict(config or {}), default=str, sort_keys=True),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def group_dataset(g: GroupStore, attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """The dataset of one group store (every draw; no warmup applied)."""
    import xarray as xr

    names = g.scalar_names()
    allocate = _NameAllocator()
    data_vars: dict[str, Any] = {}
    for key in names:
        var = allocate(key)
        data_vars[var] = (("draw",), g.column(key), variable_attrs(g.name, key, names))
    for key in g.vector_names():
        var = allocate(key)
        chain_dim = allocate(f"{var}_chain")
        var_attrs = {**variable_attrs(g.name, key, []), "vector": 1}
        data_vars[var] = (("draw", chain_dim), g.vector(key), var_attrs)
    coords = {"step": ("draw", g.steps), "time": ("draw", g.times)}
    ds = xr.Dataset(data_vars=data_vars, coords=coords)
    ds.attrs.update(attrs or {})
    ds.attrs["group"] = g.name
    return ds


def write_dataset(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write ``ds`` as netCDF-4/HDF5, replacing ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf", invalid_netcdf=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
