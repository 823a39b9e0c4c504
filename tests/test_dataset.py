"""Group store -> xarray.Dataset -> HDF5 -> xarray.open_dataset, exactly."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
import xarray as xr

from ezpz.history.dataset import (
    group_dataset,
    group_file_name,
    run_attrs,
    safe_name,
    warmup_count,
    write_dataset,
)
from ezpz.history.store import GroupStore


@pytest.mark.parametrize(
    ("n", "warmup", "expected"),
    [
        (100, 0.0, 0),
        (100, 0.05, 5),
        (100, 0.999, 99),
        (100, 1, 1),
        (100, 1.0, 1),
        (100, 10, 10),
        (100, 100, 99),  # never drops every sample
        (100, 1e9, 99),
        (100, float("inf"), 99),
        (7, 0.5, 3),
        (0, 0.5, 0),
        (1, 5, 0),
        (100, np.float32(0.25), 25),
    ],
)
def test_warmup_count_fraction_or_count(n, warmup, expected):
    assert warmup_count(n, warmup) == expected


@pytest.mark.parametrize("bad", [-0.1, -1, float("nan")])
def test_warmup_count_rejects_negative_and_nan(bad):
    with pytest.raises(ValueError, match="warmup"):
        warmup_count(10, bad)


@pytest.mark.parametrize("bad", ["0.1", None, True, [0.1]])
def test_warmup_count_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="warmup"):
        warmup_count(10, bad)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("loss", "loss"),
        ("loss/mean", "loss_mean"),
        ("a b/c:d", "a_b_c_d"),
        ("1x", "v1x"),
        ("_private", "v_private"),
        ("", "v"),
        ("lr.0-decay+1", "lr.0-decay+1"),
        ("ü", "v_"),
    ],
)
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_group_file_names():
    assert group_file_name("train") == "train.h5"
    assert group_file_name("") == "history.h5"
    assert group_file_name("my group") == "my_group.h5"


def _store(n: int, name: str = "train") -> GroupStore:
    g = GroupStore(name)
    for i in range(n):
        vals = [1.0 / (i + 1), 2.0 * i, 0.5, float("nan") if i % 3 else 1.0]
        g.append(("loss", "loss/mean", "loss/std", "sparse"), vals, 10 * i, 1.7e9 + 0.25 * i)
    return g


def test_dataset_layout_and_attrs():
    g = _store(5)
    attrs = run_attrs(
        run_id="run-1", world_size=4, group="train", config={"lr": 0.1, "n": {"a": 1}}
    )
    ds = group_dataset(g, attrs)
    assert ds.sizes["draw"] == 5
    assert ds["step"].dtype == np.int64 and ds["time"].dtype == np.float64
    assert set(ds.coords) == {"step", "time"}
    assert list(ds.data_vars) == ["loss", "loss_mean", "loss_std", "sparse"]
    assert ds["loss_mean"].attrs == {
        "key": "loss/mean",
        "full_key": "train/loss/mean",
        "base": "loss",
        "stat": "mean",
    }
    assert ds["loss"].attrs["stat"] == "" and ds["loss"].attrs["base"] == "loss"
    np.testing.assert_array_equal(ds["step"].values, [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(ds["loss_mean"].values, [0, 2, 4, 6, 8])
    assert ds.attrs["run_id"] == "run-1" and ds.attrs["world_size"] == 4
    assert ds.attrs["group"] == "train"
    assert json.loads(ds.attrs["config"]) == {"lr": 0.1, "n": {"a": 1}}
    assert ds.attrs["ezpz_version"]


def test_name_collisions_are_deterministic():
    g = GroupStore("")
    names = ("a/b", "a_b", "step", "time", "draw", "x/mean", "x")
    g.append(names, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 0, 0.0)
    ds = group_dataset(g)
    assert list(ds.data_vars) == ["a_b", "a_b_2", "step_2", "time_2", "draw_2", "x_mean", "x"]
    assert [ds[v].attrs["key"] for v in ds.data_vars] == list(names)
    assert [float(ds[v].values[0]) for v in ds.data_vars] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    # "x/mean" was logged before "x": it is still recognised as x's statistic
    assert ds["x_mean"].attrs["base"] == "x" and ds["x_mean"].attrs["stat"] == "mean"


def test_roundtrip_through_hdf5_is_exact(tmp_path):
    g = _store(50)
    g.append(("loss", "inf"), [float("inf"), float("-inf")], 500, 1.8e9)
    ds = group_dataset(g, run_attrs(run_id="r", world_size=1, group="train", config={}))
    path = write_dataset(ds, tmp_path / "train.h5")
    with xr.open_dataset(path) as back:
        back.load()
        xr.testing.assert_identical(back, ds)
        assert back["step"].dtype == np.int64
        assert np.isposinf(back["loss"].values[-1])
        assert np.isneginf(back["inf"].values[-1])
        assert np.isnan(back["sparse"].values[1])


def test_vector_metric_is_two_dimensional(tmp_path):
    g = GroupStore("mcmc")
    for i in range(6):
        row = g.append(("energy",), [float(i)], i, float(i))
        if i != 2:  # one draw without the vector: a NaN row
            width = 3 if i < 4 else 5  # widths change: NaN-padded to the widest
            g.append_vector("chains", row, np.arange(width, dtype=float) + 10 * i)
    ds = group_dataset(g)
    assert ds["chains"].dims == ("draw", "chains_chain")
    assert ds["chains"].shape == (6, 5)
    assert ds["chains"].attrs["vector"] == 1 and ds["chains"].attrs["stat"] == ""
    assert np.isnan(ds["chains"].values[2]).all()
    assert np.isnan(ds["chains"].values[0, 3:]).all()
    np.testing.assert_array_equal(ds["chains"].values[5], [50, 51, 52, 53, 54])
    path = write_dataset(ds, tmp_path / "mcmc.h5")
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), ds)


def test_file_is_plain_hdf5_readable_by_h5py(tmp_path):
    """What h5dump sees: datasets named like the variables, attributes as written."""
    ds = group_dataset(_store(4))
    path = write_dataset(ds, tmp_path / "train.h5")
    with h5py.File(path, "r") as f:
        assert {"loss", "loss_mean", "step", "time"} <= set(f)
        np.testing.assert_array_equal(f["loss_mean"][:], [0, 2, 4, 6])
        key = f["loss_mean"].attrs["key"]
        assert (key.decode() if isinstance(key, bytes) else key) == "loss/mean"


def test_rewrite_replaces_not_appends(tmp_path):
    path = tmp_path / "train.h5"
    write_dataset(group_dataset(_store(40)), path)
    small = group_dataset(_store(3))
    write_dataset(small, path)
    with xr.open_dataset(path) as back:
        assert back.sizes["draw"] == 3
        xr.testing.assert_identical(back.load(), small)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "train.h5"]
    assert leftovers == []


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "train.h5"
    good = group_dataset(_store(5))
    write_dataset(good, path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "dump_to_store", boom)
    with pytest.raises(OSError, match="disk full"):
        write_dataset(group_dataset(_store(9)), path)
    monkeypatch.undo()
    with xr.open_dataset(path) as back:
        xr.testing.assert_identical(back.load(), good)
    assert [p.name for p in tmp_path.iterdir()] == ["train.h5"]


@pytest.mark.parametrize(
    ("tool", "args"),
    [("ncdump", ["-v", "loss_mean"]), ("h5dump", ["-d", "/loss_mean"])],
)
def test_command_line_tools_read_it(tmp_path, tool, args):
    import shutil
    import subprocess

    exe = shutil.which(tool)
    if exe is None:
        pytest.skip(f"{tool} not installed (apt-get install netcdf-bin hdf5-tools)")
    path = write_dataset(group_dataset(_store(4)), tmp_path / "train.h5")
    proc = subprocess.run([exe, *args, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "loss_mean" in proc.stdout
    data = r"loss_mean = 0, 2, 4, 6 ;" if tool == "ncdump" else r"\(0\): 0, 2, 4, 6\s"
    assert re.search(data, proc.stdout), proc.stdout
