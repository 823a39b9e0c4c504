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
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ezpz._files import atomic_path
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
    from ezpz._redact import redact_config

    return {
        "run_id": str(run_id),
        "run_name": str(run_name if run_name is not None else run_id),
        "world_size": int(world_size),
        "ezpz_version": str(__version__),
        "group": group,
        # secrets redacted (ezpz._redact; docs/reliability.md): the .h5 is shared and uploaded
        "config": json.dumps(redact_config(dict(config or {})), default=str, sort_keys=True),
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
    try:
        with atomic_path(path) as tmp:  # mode 0o666 & ~umask, like any other output
            _to_netcdf(ds, tmp)
    except OSError as exc:
        # HDF5's own message is pages long; say what failed, keep the cause chained.
        reason = os.strerror(exc.errno) if exc.errno else str(exc).splitlines()[0]
        raise OSError(
            exc.errno, f"ezpz: cannot write {path.name} in {path.parent}: {reason}"
        ) from exc
    return path


def _to_netcdf(ds: xr.Dataset, path: Path) -> None:
    """``ds.to_netcdf(path, engine="h5netcdf")``, with HDF5 kept away from the disk.

    On a write error (disk full, RLIMIT_FSIZE, quota) HDF5 fails half-way and
    leaves a file it can neither flush nor close; h5netcdf then touches freed
    HDF5 objects at close or at interpreter exit, which crashed the process.
    So HDF5 builds the file in memory (one extra copy of the dataset, the
    size of the ``.h5`` file) and the bytes go to disk with plain writes,
    whose errors are ordinary ``OSError`` s that ``atomic_path`` cleans up.
    """
    import io

    import h5netcdf
    from xarray.backends import H5NetCDFStore
    from xarray.backends.common import ArrayWriter

    buffer = io.BytesIO()
    f = h5netcdf.File(buffer, "w", invalid_netcdf=False)
    try:
        writer = ArrayWriter()
        ds.dump_to_store(H5NetCDFStore(f), writer=writer)
        writer.sync()
        f.close()
    except BaseException:
        _abandon(f)
        raise
    with open(path, "wb") as fh:
        fh.write(buffer.getbuffer())


def _abandon(f: Any) -> None:
    """Close ``f`` after a failed write; if HDF5 cannot, never touch it again."""
    try:
        f.close()
    except Exception as exc:  # HDF5 could not flush or close: the ids are gone
        logger.debug("closing %s after a failed write also failed: %s", f, exc)
    # h5netcdf's __del__ calls close(); a second flush of a half-closed HDF5
    # file segfaults, so mark it closed whatever happened above.
    f._closed = True
