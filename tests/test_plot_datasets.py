"""Group datasets in the finalize convention (docs/finalize.md), built by hand for plot tests.

Imported by the other tests/test_plot*.py and tests/test_report*.py files; the
tests here check that the builder itself follows the convention, so a drift
in it cannot make the renderer tests pass for the wrong reason.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

xr = pytest.importorskip("xarray")

STATS = ("mean", "max", "min", "std")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def make_group(
    n: int = 200,
    *,
    group: str = "train",
    metrics: dict[str, np.ndarray] | None = None,
    stats: bool = True,
    vectors: dict[str, np.ndarray] | None = None,
    step0: int = 0,
    seed: int = 0,
    config: dict | None = None,
) -> xr.Dataset:
    """A group dataset: raw metrics, optional cross-rank stats and vector metrics."""
    rng = np.random.default_rng(seed)
    steps = np.arange(step0, step0 + n, dtype=np.int64)
    if metrics is None:
        t = np.arange(n, dtype=np.float64)
        metrics = {
            "loss": 2.0 * np.exp(-t / max(n / 4, 1)) + 0.05 * rng.standard_normal(n),
            "acc": 1.0 - np.exp(-t / max(n / 5, 1)),
        }
    data_vars = {}

    def add(name: str, values: np.ndarray, base: str, stat: str, **extra: object) -> None:
        key = f"{base}/{stat}" if stat else base
        var = _safe(key)
        attrs = {"key": key, "full_key": f"{group}/{key}" if group else key, "base": base}
        attrs["stat"] = stat
        attrs.update(extra)
        dims = ("draw",) if values.ndim == 1 else ("draw", f"{_safe(base)}_chain")
        data_vars[var] = xr.Variable(dims, np.asarray(values, dtype=np.float64), attrs=attrs)

    for base, raw in metrics.items():
        raw = np.asarray(raw, dtype=np.float64)
        add(base, raw, base, "")
        if stats:
            spread = 0.1 * np.abs(np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)) + 0.01
            add(base, raw + 0.1 * spread, base, "mean")
            add(base, raw + spread, base, "max")
            add(base, raw - spread, base, "min")
            add(base, spread / 2, base, "std")
    for base, values in (vectors or {}).items():
        add(base, np.asarray(values, dtype=np.float64), base, "", vector=1)
    return xr.Dataset(
        data_vars,
        coords={
            "step": ("draw", steps),
            "time": ("draw", 1.7e9 + np.arange(n, dtype=np.float64)),
        },
        attrs={
            "run_id": "2026-11-28-051700-abc123",
            "run_name": "unit-test",
            "world_size": 4,
            "ezpz_version": "0.0.test",
            "group": group,
            "config": json.dumps(config or {"lr": 1e-3}),
        },
    )


def test_builder_follows_convention():
    ds = make_group(50, group="train", vectors={"chains": np.zeros((50, 3))})
    assert set(ds.data_vars) == {
        "loss",
        "loss_mean",
        "loss_max",
        "loss_min",
        "loss_std",
        "acc",
        "acc_mean",
        "acc_max",
        "acc_min",
        "acc_std",
        "chains",
    }
    assert ds["loss_mean"].attrs == {
        "key": "loss/mean",
        "full_key": "train/loss/mean",
        "base": "loss",
        "stat": "mean",
    }
    assert ds["chains"].dims == ("draw", "chains_chain")
    assert ds["step"].dtype == np.int64
    assert ds.sizes["draw"] == 50


def test_builder_round_trips_through_hdf5(tmp_path):
    pytest.importorskip("h5netcdf")
    ds = make_group(20, stats=True)
    path = tmp_path / "train.h5"
    ds.to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), ds)
