"""Backend selection: backends=, EZPZ_TRACKER_BACKENDS, none, tracker=, wandb adoption."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
import warnings

import pytest

from ezpz.tracker import (
    NullTracker,
    Tracker,
    TrackerBackend,
    handle_use_wandb,
    parse_backend_names,
    register_backend,
    resolve_tracker,
    unregister_backend,
)

ENV = "EZPZ_TRACKER_BACKENDS"


class Counting(TrackerBackend):
    """Records its constructor kwargs and calls; counts instances."""

    name = "counting"
    instances: list[Counting] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.configs: list[dict] = []
        self.logs: list[dict] = []
        Counting.instances.append(self)

    def log(self, metrics, step=None, commit=True):
        self.logs.append(dict(metrics))

    def log_config(self, config):
        self.configs.append(dict(config))

    def finish(self):
        pass


class FakeWandbBackend(Counting):
    """Stands in for the wandb backend so selection can be tested without W&B."""

    name = "wandb"

    @property
    def run(self):
        return self.kwargs.get("run")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    Counting.instances.clear()
    register_backend("counting", Counting)
    yield
    unregister_backend("counting")
    unregister_backend("wandb")


def _finish(tracker: Tracker) -> None:
    report = tracker.finish(timeout=30)
    assert report.ok, str(report)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("wandb,csv", ["wandb", "csv"]),
        (" WandB , csv ,, csv", ["wandb", "csv"]),
        (["mlflow", "csv,wandb"], ["mlflow", "csv", "wandb"]),
        ("none", []),
        (" NONE ", []),
        ("", []),
        ([], []),
        (None, []),
    ],
)
def test_parse_backend_names(spec, names):
    assert parse_backend_names(spec) == names


@pytest.mark.parametrize(
    ("spec", "error"), [("none,csv", ValueError), (3, TypeError), (["csv", 1], TypeError)]
)
def test_parse_backend_names_rejects_bad_specs(spec, error):
    with pytest.raises(error):
        parse_backend_names(spec)


def test_unknown_name_is_rejected_listing_the_known_ones():
    with pytest.raises(ValueError) as info:
        resolve_tracker(backends="csv,wandbb")
    text = str(info.value)
    assert "'wandbb'" in text
    for known in ("csv", "wandb", "mlflow", "none", "counting"):
        assert known in text


def test_unknown_name_is_rejected_on_other_ranks_too():
    with pytest.raises(ValueError, match="nope"):
        resolve_tracker(backends="nope", rank=3, world_size=4)


def test_unknown_name_in_env_var_names_the_variable(monkeypatch):
    monkeypatch.setenv(ENV, "counting,bogus")
    with pytest.raises(ValueError, match=ENV):
        resolve_tracker()


def test_none_and_nothing_give_a_null_tracker(monkeypatch):
    assert isinstance(resolve_tracker(), NullTracker)
    assert isinstance(resolve_tracker(backends="none"), NullTracker)
    monkeypatch.setenv(ENV, "none")
    assert isinstance(resolve_tracker(), NullTracker)


def test_env_var_selects_backends_and_argument_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "counting")
    tracker = resolve_tracker(outdir=tmp_path, project_name="p", rank=0, world_size=2)
    assert tracker.backend_names == ("counting",)
    (built,) = Counting.instances
    assert built.kwargs == {
        "project_name": "p",
        "config": None,
        "outdir": tmp_path,
        "rank": 0,
        "world_size": 2,
    }
    _finish(tracker)
    tracker = resolve_tracker(backends="csv", outdir=tmp_path)
    assert tracker.backend_names == ("csv",)
    _finish(tracker)
    assert isinstance(resolve_tracker(backends="none"), NullTracker)


def test_backends_are_built_on_rank_zero_only(tmp_path):
    tracker = resolve_tracker(backends="counting,csv", outdir=tmp_path, rank=1, world_size=2)
    assert tracker.backends == () and tracker.requested == ("counting", "csv")
    assert Counting.instances == []
    assert list(tmp_path.iterdir()) == []


def test_config_is_logged_once(tmp_path):
    tracker = resolve_tracker(backends="counting", config={"lr": 0.1})
    _finish(tracker)
    assert Counting.instances[0].configs == [{"lr": 0.1}]


def test_tracker_injection_wins_over_backends():
    mine = Tracker()
    assert resolve_tracker(tracker=mine, backends="csv") is mine
    backend = Counting()
    wrapped = resolve_tracker(tracker=backend, config={"a": 1})
    assert wrapped.backends == (backend,)
    _finish(wrapped)
    assert backend.configs == [{"a": 1}]
    with pytest.raises(TypeError):
        resolve_tracker(tracker="csv")  # type: ignore[arg-type]


def test_constructor_kwargs_are_filtered_to_what_the_backend_accepts():
    seen = {}

    class NoArgs(TrackerBackend):
        name = "noargs"

        def __init__(self):
            seen["noargs"] = True

        def log(self, metrics, step=None, commit=True): ...
        def log_config(self, config): ...
        def finish(self): ...

    class OnlyOutdir(NoArgs):
        name = "onlyoutdir"

        def __init__(self, outdir=None):
            seen["outdir"] = outdir

    register_backend("noargs", NoArgs)
    register_backend("onlyoutdir", OnlyOutdir)
    try:
        tracker = resolve_tracker(backends="noargs,onlyoutdir", outdir="/x", project_name="p")
        assert tracker.backend_names == ("noargs", "onlyoutdir")
        assert seen == {"noargs": True, "outdir": "/x"}
        _finish(tracker)
    finally:
        unregister_backend("noargs")
        unregister_backend("onlyoutdir")


def test_a_backend_that_fails_to_start_is_left_out_and_logged(caplog):
    class Broken(Counting):
        def __init__(self, **kwargs):
            raise ConnectionError("server down")

    register_backend("broken", Broken)
    try:
        with caplog.at_level(logging.ERROR, logger="ezpz.tracker"):
            tracker = resolve_tracker(backends="broken,counting")
        assert tracker.backend_names == ("counting",)
        assert tracker.requested == ("broken", "counting")
        assert any("'broken' could not be started" in r.getMessage() for r in caplog.records)
        _finish(tracker)
    finally:
        unregister_backend("broken")


def _fake_wandb_module(monkeypatch, run):
    module = types.ModuleType("wandb")
    module.run = run
    monkeypatch.setitem(sys.modules, "wandb", module)


def test_active_wandb_run_is_adopted_with_a_deprecation_warning(monkeypatch):
    register_backend("wandb", FakeWandbBackend)
    run = types.SimpleNamespace(id="abc")
    _fake_wandb_module(monkeypatch, run)
    with pytest.warns(DeprecationWarning, match="active wandb.run"):
        tracker = resolve_tracker(project_name="p")
    assert tracker.backend_names == ("wandb",)
    assert tracker.wandb_run is run
    _finish(tracker)


def test_active_wandb_run_is_not_adopted_when_backends_are_given(monkeypatch):
    register_backend("wandb", FakeWandbBackend)
    _fake_wandb_module(monkeypatch, types.SimpleNamespace(id="abc"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        tracker = resolve_tracker(backends="counting")
        assert tracker.backend_names == ("counting",)
        assert isinstance(resolve_tracker(backends="none"), NullTracker)
    _finish(tracker)


@pytest.mark.parametrize("kind", ["RunDisabled", "NoopRun"])
def test_disabled_wandb_runs_are_not_adopted(monkeypatch, kind):
    _fake_wandb_module(monkeypatch, type(kind, (), {})())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert isinstance(resolve_tracker(), NullTracker)


def test_wandb_disabled_env_drops_the_wandb_backend(monkeypatch):
    register_backend("wandb", FakeWandbBackend)
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert isinstance(resolve_tracker(backends="wandb"), NullTracker)
    tracker = resolve_tracker(backends="wandb,counting")
    assert tracker.backend_names == ("counting",)
    _finish(tracker)


def test_handle_use_wandb_warns_and_attaches_wandb_once(monkeypatch):
    register_backend("wandb", FakeWandbBackend)
    null = NullTracker()
    assert handle_use_wandb(null, None) is null
    assert handle_use_wandb(null, False) is null
    with pytest.warns(DeprecationWarning, match="use_wandb"):
        upgraded = handle_use_wandb(null, True, project_name="p")
    assert isinstance(upgraded, Tracker) and upgraded.backend_names == ("wandb",)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert handle_use_wandb(upgraded, True) is upgraded  # warned once already
    _finish(upgraded)

    existing = resolve_tracker(backends="counting")
    with pytest.warns(DeprecationWarning):
        same = handle_use_wandb(existing, True)
    assert same is existing and existing.backend_names == ("counting", "wandb")
    _finish(existing)

    other_rank = Tracker()
    with pytest.warns(DeprecationWarning):
        assert handle_use_wandb(other_rank, True, rank=1, world_size=2) is other_rank
    assert other_rank.backends == ()


def test_import_and_csv_selection_import_no_heavy_package(tmp_path):
    code = (
        "import sys, ezpz.tracker as t\n"
        f"tr = t.resolve_tracker(backends='csv', outdir={str(tmp_path)!r})\n"
        "tr.log({'a': 1.0}, step=0); tr.finish(30)\n"
        "heavy = [m for m in ('wandb', 'mlflow', 'torch', 'matplotlib', 'xarray', 'h5py') "
        "if m in sys.modules]\n"
        "print(heavy)\n"
    )
    env = {**os.environ, "WANDB_DISABLED": "1", ENV: ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "metrics.csv").exists()
