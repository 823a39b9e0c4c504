"""Renderers for ``History.finalize()``: matplotlib PNGs and plotext text plots.

This package module only knows how to read a finalize dataset (one
``xarray.Dataset`` per group, see ``docs/finalize.md``) into the list of
metrics to draw; the renderers live in :mod:`ezpz.plot.mplot` and
:mod:`ezpz.plot.tplot`, the decimation in :mod:`ezpz.plot.downsample`.
Nothing heavy (matplotlib, plotext, xarray) is imported here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = [
    "STATS",
    "Metric",
    "group_dirname",
    "metric_layout",
    "safe_stem",
    "unique_stem",
    "warmup_start",
    "x_values",
]

logger = logging.getLogger(__name__)

#: cross-rank statistics a raw metric may carry, in drawing order
STATS: tuple[str, ...] = ("mean", "min", "max", "std")


@dataclass
class Metric:
    """One metric of a group and the data variables that hold it."""

    base: str  # user-facing name inside the group, e.g. "loss" or "grad/norm"
    raw: str | None = None  # data var with the raw (rank 0) values
    stats: dict[str, str] = field(default_factory=dict)  # "mean" -> "loss_mean", ...
    vector: bool = False  # 2-d (draw, <name>_chain) per-chain values

    def label(self, group: str) -> str:
        """Full key as the user logged it: ``train/loss`` or ``loss``."""
        return f"{group}/{self.base}" if group else self.base

    def main_var(self) -> str:
        """The variable that stands for the metric: raw values, else the cross-rank mean."""
        if self.raw is not None:
            return self.raw
        for stat in STATS:
            if stat in self.stats:
                return self.stats[stat]
        raise ValueError(f"metric {self.base!r} has no variables")  # pragma: no cover


def group_dirname(group: str) -> str:
    """Directory name of a group's plots: the group itself, ``history`` for the unprefixed one."""
    return safe_stem(group) if group else "history"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def remove_stale(plot_dir: Path, written: list[Path], pattern: str) -> None:
    """Delete files an earlier run left in ``plot_dir`` that this run did not write."""
    keep = set(written)
    for stale in plot_dir.glob(pattern):
        if stale not in keep:
            stale.unlink(missing_ok=True)


def safe_stem(name: str) -> str:
    """A file-name stem from a metric name: ``grad/norm`` -> ``grad-norm``; never empty."""
    stem = _UNSAFE.sub("_", name.replace("/", "-")).strip("._-")
    return stem or "metric"


def unique_stem(name: str, taken: set[str]) -> str:
    """:func:`safe_stem` made unique (case-insensitively) against ``taken``, which it updates."""
    stem = safe_stem(name)
    candidate, i = stem, 2
    while candidate.lower() in taken:
        candidate = f"{stem}-{i}"
        i += 1
    taken.add(candidate.lower())
    return candidate


def _stat_of(name: str, attrs: dict[str, Any], names: set[str]) -> tuple[str, str]:
    """(base, stat) of a data variable; stat is "" for raw values.

    The dataset convention puts them in attrs; datasets written without them
    (older files, hand-made ones) fall back to the ``<base>_<stat>`` naming.
    """
    if "base" in attrs and "stat" in attrs:
        return str(attrs["base"]), str(attrs["stat"] or "")
    for stat in STATS:
        suffix = f"_{stat}"
        if name.endswith(suffix) and name[: -len(suffix)] in names:
            return name[: -len(suffix)], stat
    return str(attrs.get("key", name)), ""


def metric_layout(ds: xr.Dataset) -> list[Metric]:
    """The metrics of a group dataset, in variable order, each with its raw and stat variables."""
    names = {str(n) for n in ds.data_vars}
    by_base: dict[str, Metric] = {}
    for var_name in ds.data_vars:
        da = ds[var_name]
        if "draw" not in da.dims:
            continue  # run-level variables, if any, are not time series
        if da.ndim > 2:
            logger.warning("not plotting %s: %d dimensions", var_name, da.ndim)
            continue
        base, stat = _stat_of(str(var_name), dict(da.attrs), names)
        metric = by_base.setdefault(base, Metric(base=base))
        if da.ndim == 2 or bool(da.attrs.get("vector", 0)):
            metric.vector = True
        if stat in STATS:
            metric.stats[stat] = str(var_name)
        elif stat == "":
            metric.raw = str(var_name)
        else:
            # An unknown statistic (e.g. "count") becomes its own plain metric.
            by_base.setdefault(f"{base}/{stat}", Metric(base=f"{base}/{stat}", raw=str(var_name)))
    return [m for m in by_base.values() if m.raw is not None or m.stats]


def warmup_start(n: int, warmup: float) -> int:
    """Index of the first sample kept after dropping ``warmup`` (fraction < 1 or count >= 1)."""
    from ezpz.history.dataset import warmup_count  # the one rule finalize and plots share

    return int(warmup_count(n, warmup))


def x_values(ds: xr.Dataset) -> np.ndarray:
    """The x axis of a group: its ``step`` coordinate, else 0..n-1."""
    n = int(ds.sizes.get("draw", 0))
    if "step" in ds.coords and ds["step"].dims == ("draw",):
        return np.asarray(ds["step"].values)
    return np.arange(n)
