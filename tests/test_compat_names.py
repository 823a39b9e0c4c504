"""ezpz 0.26 names outside History (issue 13): tracker, StopWatch, memory, tplot, grab_tensor."""

from __future__ import annotations

import csv
import logging
import math
import subprocess
import sys

import numpy as np
import pytest

import ezpz
from ezpz import memory
from ezpz.history.stopwatch import StopWatch, get_active_tracker, set_active_tracker

GIB = 1024**3


# -- ezpz.tracker ------------------------------------------------------------------------
def test_backend_classes_and_setup_tracker_are_importable_without_heavy_imports():
    code = (
        "import sys\n"
        "from ezpz.tracker import CSVBackend, WandbBackend, MLflowBackend, MlflowBackend, setup_tracker\n"
        "from ezpz.tracker.csv_backend import CSVBackend as C\n"
        "assert CSVBackend is C and MLflowBackend is MlflowBackend\n"
        "assert WandbBackend.name == 'wandb' and MLflowBackend.name == 'mlflow'\n"
        "assert callable(setup_tracker)\n"
        "print('wandb' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_setup_tracker_builds_backends_and_feeds_stopwatch(tmp_path):
    from ezpz.tracker import Tracker, setup_tracker

    set_active_tracker(None)
    tracker = setup_tracker(
        project_name="p", backends="csv", config={"lr": 0.1}, outdir=tmp_path, rank=0
    )
    try:
        assert isinstance(tracker, Tracker) and tracker.backend_names == ("csv",)
        assert get_active_tracker() is tracker
        with StopWatch("fwd", wbtag="timing/fwd", iter=3):
            pass
        tracker.log({"loss": 1.0}, step=3)
        tracker.log_table("t", ["a", "b"], data=[[1, 2], [3, 4]])
        assert tracker.flush(30)
    finally:
        tracker.finish()
        set_active_tracker(None)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    assert [r["step"] for r in rows] == ["3", "3"]
    assert float(rows[0]["timing/fwd"]) >= 0 and rows[1]["loss"] == "1.0"
    assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b", "1,2", "3,4"]
    assert (tmp_path / "config.json").exists()


def test_setup_tracker_other_ranks_and_unknown_names(tmp_path):
    from ezpz.tracker import setup_tracker

    quiet = setup_tracker(backends="csv", outdir=tmp_path / "r1", rank=1, world_size=2)
    quiet.log({"x": 1.0})
    quiet.finish()
    assert not (tmp_path / "r1").exists()
    with pytest.raises(ValueError, match="known backends"):
        setup_tracker(backends="csvv", outdir=tmp_path, rank=0)
    set_active_tracker(None)


def test_log_table_rows_or_data_not_both():
    from ezpz.tracker import NullTracker

    tracker = NullTracker()
    tracker.log_table("k", ["a"], [[1]])
    tracker.log_table("k", ["a"], data=[[1]])
    with pytest.raises(TypeError, match="not both"):
        tracker.log_table("k", ["a"], [[1]], data=[[1]])
    with pytest.raises(TypeError, match="rows"):
        tracker.log_table("k", ["a"])


def test_csv_commit_false_rows_are_not_merged(tmp_path):
    from ezpz.tracker import CSVBackend

    backend = CSVBackend(outdir=tmp_path)
    for step in range(3):
        backend.log({"loss": float(step)}, step=step, commit=False)
    backend.finish()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    assert [(r["step"], r["loss"]) for r in rows] == [("0", "0.0"), ("1", "1.0"), ("2", "2.0")]


def test_system_info_has_device_and_git_branch(tmp_path, monkeypatch):
    from ezpz.tracker import sysinfo

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/feature/x\n")
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    info = sysinfo.system_info(world_size=2)
    assert info["git_branch"] == "feature/x"
    assert info["device"] in ("cpu", "cuda", "xpu", "mps", "unknown")
    (repo / ".git" / "HEAD").write_text("0123456789abcdef0123\n")
    assert sysinfo.git_branch() == "0123456789ab"
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert sysinfo.device_kind() == "unknown"


def test_mlflow_params_carry_device_and_branch(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from ezpz.tracker import MLflowBackend

    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/compat-branch\n")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    backend = MLflowBackend(
        project_name="ezpz-compat", rank=0, world_size=1, tracking_uri=uri, system_metrics=False
    )
    backend.log({"loss": 1.0})
    backend.finish()
    params = MlflowClient(uri).get_run(backend.run_id).data.params
    assert params["ezpz.git_branch"] == "compat-branch"
    assert params["ezpz.device"] in ("cpu", "cuda", "xpu", "mps", "unknown")


# -- StopWatch ----------------------------------------------------------------------------
def test_stopwatch_data_as_0_26_filled_it():
    set_active_tracker(None)
    plain = StopWatch("no tag")
    assert plain.data == {} and plain.prefix == "StopWatch/"
    watch = StopWatch("fwd", "timing/fwd", 7, False, "Custom/", False)  # 0.26 positional order
    assert watch.data == {"timing/fwd/dt": None, "timing/fwd/iter": 7}
    assert watch.prefix == "Custom/" and watch.log_output is False
    with watch:
        pass
    assert watch.data["timing/fwd/dt"] == watch.elapsed and watch.data["timing/fwd/iter"] == 7
    no_iter = StopWatch("bwd", wbtag="timing/bwd")
    with no_iter:
        pass
    assert set(no_iter.data) == {"timing/bwd/dt"} and no_iter.data["timing/bwd/dt"] >= 0


def test_stopwatch_decorator_exposes_last_data():
    set_active_tracker(None)
    watch = StopWatch("f", wbtag="timing/f", log_output=False)

    @watch
    def f() -> int:
        return 1

    assert f() == 1
    assert watch.data["timing/f/dt"] is not None


# -- memory -------------------------------------------------------------------------------
class FakeCuda:
    """torch.cuda's allocator surface; optionally missing or broken pieces (old XPU builds)."""

    def __init__(self, broken: bool = False, no_reset: bool = False) -> None:
        self.peak = 3 * GIB
        self.resets: list[int | None] = []
        self.broken = broken
        if no_reset:
            self.reset_peak_memory_stats = None  # type: ignore[assignment]

    def current_device(self) -> int:
        return 0

    def memory_stats(self, index):
        if self.broken:
            raise AttributeError("memory_stats")
        return {
            "allocated_bytes.all.current": GIB,
            "allocated_bytes.all.peak": self.peak,
            "reserved_bytes.all.current": 2 * GIB,
            "reserved_bytes.all.peak": 4 * GIB,
        }

    def memory_allocated(self, index=None):
        return GIB

    def memory_reserved(self, index=None):
        return 2 * GIB

    def max_memory_allocated(self, index=None):
        if self.broken:
            raise AttributeError("XPU build without max_memory_allocated")
        return self.peak

    def max_memory_reserved(self, index=None):
        return 4 * GIB

    def reset_peak_memory_stats(self, index=None):
        self.resets.append(index)
        self.peak = GIB

    def get_device_properties(self, index):
        return type("P", (), {"total_memory": 10 * GIB})()


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(memory, "_total_bytes", {})
    monkeypatch.setattr(memory, "_warned_failures", set())
    monkeypatch.delenv("EZPZ_TRACK_MEMORY", raising=False)

    def install(**kw):
        dev = FakeCuda(**kw)
        monkeypatch.setattr(
            memory, "_accelerator_module", lambda kind: dev if kind == "cuda" else None
        )
        return dev

    return install


def test_reset_peak_default_gives_per_call_peaks(fake):
    dev = fake()
    first = ezpz.get_memory_metrics("cuda:0")
    assert first["mem_peak_alloc"] == 3.0 and dev.resets == [0]
    assert ezpz.get_memory_metrics("cuda:0")["mem_peak_alloc"] == 1.0  # since the last call
    dev.peak = 3 * GIB
    assert ezpz.get_memory_metrics("cuda:0", "", False)["mem_peak_alloc"] == 3.0
    assert dev.resets == [0, 0]  # reset_peak=False left the counters alone


def test_memory_helpers_on_a_device_and_broken_builds(fake):
    dev = fake()
    assert ezpz.get_current_memory_allocated("cuda:0") == GIB
    assert ezpz.get_current_memory_reserved("cuda") == 2 * GIB
    assert ezpz.get_max_memory_allocated(0) == 3 * GIB
    assert ezpz.get_max_memory_reserved("cuda:0") == 4 * GIB
    ezpz.reset_peak_memory_stats("cuda:0")
    assert dev.resets == [0] and ezpz.get_max_memory_allocated("cuda:0") == GIB
    fake(broken=True, no_reset=True)
    assert ezpz.get_max_memory_allocated("cuda:0") == 0.0  # AttributeError -> 0, no raise
    ezpz.reset_peak_memory_stats("cuda:0")  # missing call -> no-op
    assert ezpz.get_memory_metrics("cuda:0") == {}


def test_memory_helpers_on_cpu_are_zero():
    for name in (
        "get_current_memory_allocated",
        "get_current_memory_reserved",
        "get_max_memory_allocated",
        "get_max_memory_reserved",
    ):
        assert getattr(ezpz, name)("cpu") == 0.0
        assert getattr(ezpz.utils, name)("mps") == 0.0
    assert ezpz.reset_peak_memory_stats("cpu") is None
    assert ezpz.utils.get_memory_metrics("cpu", reset_peak=True) == {}


def test_format_memory_summary_matches_the_console_token(fake):
    fake()
    metrics = ezpz.get_memory_metrics("cuda:0", prefix="train/")
    token = ezpz.format_memory_summary(metrics)
    assert token == "1.00/2.00GiB (30%)"  # alloc/reserved, peak 3 of 10 GiB
    line = ezpz.format_compact_summary(metrics)
    assert line == f"train/memory={token}"
    assert ezpz.utils.format_memory_summary({"loss": 1.0}) == ""


def test_format_compact_summary_constant_keys_and_min_widths():
    from ezpz.utils import format_compact_summary

    metrics = {"iter": 8, "loss": 0.5, "loss/std": 0.1, "tau": 0.3, "tau/std": 0.01}
    plain = format_compact_summary(metrics, 3)
    assert "tau=0.300(±" in plain
    line = format_compact_summary(metrics, 3, constant_keys=("tau",), min_widths={"iter": 10})
    assert line.startswith("iter=8     loss=0.500(±  0.10)")
    assert line.endswith(" tau=0.300")


# -- grab_tensor --------------------------------------------------------------------------
def test_grab_tensor():
    from ezpz.history import grab_tensor
    from ezpz.utils import grab_tensor as same

    assert grab_tensor is same
    assert grab_tensor(None) is None and grab_tensor(1.5) == 1.5
    arr = np.arange(3.0)
    assert grab_tensor(arr) is arr
    assert grab_tensor([1, 2]).tolist() == [1, 2]
    torch = pytest.importorskip("torch")
    assert grab_tensor(torch.tensor(2.5)) == 2.5
    out = grab_tensor([torch.ones(2), torch.zeros(2)])
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)
    assert grab_tensor(torch.ones(2, dtype=torch.bfloat16, requires_grad=True)).dtype == np.float32
    xr = pytest.importorskip("xarray")
    assert grab_tensor(xr.DataArray([1.0, 2.0])).tolist() == [1.0, 2.0]


# -- ezpz.tplot ---------------------------------------------------------------------------
def test_tplot_inputs_and_file(tmp_path, monkeypatch):
    import ezpz.tplot as tp

    monkeypatch.delenv("EZPZ_TPLOT_TYPE", raising=False)
    monkeypatch.delenv("EZPZ_TPLOT_MARKER", raising=False)
    torch = pytest.importorskip("torch")
    xr = pytest.importorskip("xarray")
    out = tmp_path / "a" / "loss.txt"
    inputs = [
        [1.0, 0.5, 0.25, 0.2],
        np.array([1.0, 0.5, 0.25, 0.2]),
        torch.tensor([1.0, 0.5, 0.25, 0.2]),
        [torch.tensor(v) for v in (1.0, 0.5, 0.25, 0.2)],
        xr.DataArray([1.0, 0.5, 0.25, 0.2], dims=("draw",)),
    ]
    texts = [tp.tplot(y, label="loss", ylabel="loss", outfile=out) for y in inputs]
    assert len(set(texts)) == 1 and "loss" in texts[0]
    assert out.read_text().count(texts[0]) == 5  # append=True is the default
    tp.tplot([1.0, 2.0], outfile=out, append=False)
    assert texts[0] not in out.read_text()
    assert "\x1b[" not in out.read_text()  # no colour codes in files


def test_tplot_types_and_env(tmp_path, monkeypatch, capsys):
    import ezpz.tplot as tp

    y = np.sin(np.linspace(0, 6, 12))  # few points: lines and points look different
    line = tp.tplot(y, title="T", outfile=tmp_path / "l.txt", plot_type="line")
    hist = tp.tplot(y, title="T", outfile=tmp_path / "h.txt", plot_type="hist")
    scatter = tp.tplot(y, title="T", outfile=tmp_path / "s.txt", plot_type="scatter")
    assert len({line, hist, scatter}) == 3 and "(n=12)" in hist
    monkeypatch.setenv("EZPZ_TPLOT_TYPE", "hist")
    assert tp.tplot(y, title="T", outfile=tmp_path / "e.txt") == hist
    monkeypatch.setenv("EZPZ_TPLOT_TYPE", "line")
    monkeypatch.setenv("EZPZ_TPLOT_MARKER", "+")
    plus = tp.tplot(y, title="T", outfile=tmp_path / "m.txt")
    assert "+" in plus and plus != line
    capsys.readouterr()
    tp.tplot([1.0, 2.0, 3.0], title="printed")
    assert "printed" in capsys.readouterr().out  # no outfile: printed, as 0.26 showed it
    assert "no finite values" in tp.tplot([math.nan, math.inf], outfile=tmp_path / "n.txt")
    with pytest.raises(ValueError, match="x has"):
        tp.tplot([1.0, 2.0], x=[1.0], outfile=tmp_path / "bad.txt")


def test_tplot_dict(tmp_path):
    import ezpz.tplot as tp

    torch = pytest.importorskip("torch")
    scalars = tp.tplot_dict({"a": 1.0, "b": 3.0, "c": 2.0}, title="s", outfile=tmp_path / "s.txt")
    assert "s" in scalars and (tmp_path / "s.txt").read_text() == scalars
    series = tp.tplot_dict(
        {"loss": [1.0, 0.5, 0.2], "acc": torch.tensor([0.1, 0.5, 0.9])},
        ylabel="value",
        outfile=tmp_path / "d.txt",
        append=False,
    )
    assert "loss" in series and "acc" in series  # legend entries
    with pytest.raises(TypeError):
        tp.tplot_dict([1.0, 2.0])  # type: ignore[arg-type]


def test_import_ezpz_stays_light():
    code = (
        "import sys, ezpz, ezpz.tplot, ezpz.history.compat, ezpz.memory, ezpz.tracker\n"
        "heavy = [m for m in ('torch', 'xarray', 'matplotlib', 'h5py', 'wandb', 'mlflow', 'plotext')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_log_level_of_stopwatch_unchanged(caplog):
    set_active_tracker(None)
    caplog.set_level(logging.INFO, logger="ezpz.history.stopwatch")
    with StopWatch("visible"):
        pass
    assert any("visible took" in r.getMessage() for r in caplog.records)
