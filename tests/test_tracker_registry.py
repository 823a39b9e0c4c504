"""Custom backends: register_backend and the ``ezpz.trackers`` entry-point group."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap

import pytest

from ezpz.tracker import (
    TrackerBackend,
    known_backends,
    register_backend,
    resolve_tracker,
    unregister_backend,
)
from ezpz.tracker.registry import load_backend_class

PLUGIN_MODULE = "ezpz_test_tracker_plugin"

PLUGIN_SOURCE = textwrap.dedent(
    """
    from ezpz.tracker import TrackerBackend

    RECEIVED = []

    class PluginBackend(TrackerBackend):
        name = "plugin_rec"

        def __init__(self, project_name=None, **kwargs):
            self.project_name = project_name

        def log(self, metrics, step=None, commit=True):
            RECEIVED.append((step, dict(metrics)))

        def log_config(self, config):
            RECEIVED.append(("config", dict(config)))

        def finish(self):
            RECEIVED.append(("finish", None))

    class NotABackend:
        pass

    class Incomplete(TrackerBackend):
        def log(self, metrics, step=None, commit=True):
            pass
    """
)


@pytest.fixture
def plugin_on_path(tmp_path, monkeypatch):
    """A distribution with ``ezpz.trackers`` entry points, findable via sys.path (no pip)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    dist_info = site / "ezpz_test_tracker_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ezpz-test-tracker-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[ezpz.trackers]\n"
        f"plugin_rec = {PLUGIN_MODULE}:PluginBackend\n"
        f"plugin_bad = {PLUGIN_MODULE}:NotABackend\n"
        f"plugin_incomplete = {PLUGIN_MODULE}:Incomplete\n"
        f"csv = {PLUGIN_MODULE}:PluginBackend\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    sys.modules.pop(PLUGIN_MODULE, None)


class Mine(TrackerBackend):
    name = "my_backend"

    def __init__(self, **kwargs):
        self.entries = []

    def log(self, metrics, step=None, commit=True):
        self.entries.append((step, dict(metrics)))

    def log_config(self, config):
        pass

    def finish(self):
        pass


def test_register_backend_makes_a_name_usable():
    register_backend("My_Backend", Mine)
    try:
        assert "my_backend" in known_backends()
        tracker = resolve_tracker(backends="my_backend")
        tracker.log({"loss": 0.5}, step=1)
        tracker.finish(timeout=30)
        assert tracker.get_backend("my_backend").entries == [(1, {"loss": 0.5})]
    finally:
        unregister_backend("my_backend")
    assert "my_backend" not in known_backends()
    with pytest.raises(ValueError, match="unknown"):
        resolve_tracker(backends="my_backend")


@pytest.mark.parametrize(
    ("name", "cls", "error"),
    [
        ("", Mine, ValueError),
        ("a,b", Mine, ValueError),
        ("none", Mine, ValueError),
        ("x", object, TypeError),
        ("x", Mine(), TypeError),
    ],
)
def test_register_backend_rejects_bad_input(name, cls, error):
    with pytest.raises(error):
        register_backend(name, cls)


def test_registering_over_a_builtin_warns_and_wins(caplog):
    with caplog.at_level(logging.WARNING, logger="ezpz.tracker"):
        register_backend("csv", Mine)
    try:
        assert load_backend_class("csv") is Mine
        assert any("replaces the built-in" in r.getMessage() for r in caplog.records)
    finally:
        unregister_backend("csv")
    from ezpz.tracker.csv_backend import CSVBackend

    assert load_backend_class("csv") is CSVBackend


def test_entry_point_backend_is_discovered_and_used(plugin_on_path):
    assert "plugin_rec" in known_backends()
    tracker = resolve_tracker(backends="plugin_rec", project_name="proj", config={"k": 1})
    tracker.log({"loss": 1.5}, step=4)
    assert tracker.finish(timeout=30).ok
    plugin = sys.modules[PLUGIN_MODULE]
    assert plugin.RECEIVED == [("config", {"k": 1}), (4, {"loss": 1.5}), ("finish", None)]
    assert tracker.get_backend("plugin_rec").project_name == "proj"


def test_entry_point_cannot_shadow_a_builtin(plugin_on_path, caplog):
    from ezpz.tracker.csv_backend import CSVBackend

    with caplog.at_level(logging.WARNING, logger="ezpz.tracker"):
        assert load_backend_class("csv") is CSVBackend
        known_backends()
    assert any("is a built-in name" in r.getMessage() for r in caplog.records)


def test_entry_point_that_is_not_a_backend_is_refused(plugin_on_path, caplog):
    with pytest.raises(TypeError, match="not a TrackerBackend"):
        load_backend_class("plugin_bad")
    # through resolve_tracker the failure is logged and the run goes on
    with caplog.at_level(logging.ERROR, logger="ezpz.tracker"):
        tracker = resolve_tracker(backends="plugin_bad")
    assert tracker.backends == ()
    assert any("'plugin_bad' could not be started" in r.getMessage() for r in caplog.records)


def test_entry_point_names_disappear_with_their_distribution():
    assert "plugin_rec" not in known_backends()


class NoFinish(TrackerBackend):
    """A custom backend that forgot ``finish``."""

    name = "no_finish"

    def log(self, metrics, step=None, commit=True):
        pass

    def log_config(self, config):
        pass


def test_a_backend_missing_a_method_fails_where_it_is_built():
    from ezpz.tracker import Tracker

    with pytest.raises(TypeError, match="abstract method.*finish"):
        NoFinish()
    with pytest.raises(TypeError, match=r"'no_finish' \(NoFinish\) does not implement finish"):
        register_backend("no_finish", NoFinish)
    assert "no_finish" not in known_backends()
    # the base class itself is not a backend either
    with pytest.raises(TypeError, match="abstract"):
        TrackerBackend()
    # a complete subclass is built and used as before
    tracker = Tracker([Mine()])
    tracker.log({"x": 1.0}, step=0)
    assert tracker.finish(timeout=30).ok


def test_an_incomplete_entry_point_backend_is_refused_on_load(plugin_on_path, caplog):
    with pytest.raises(TypeError, match="does not implement finish, log_config"):
        load_backend_class("plugin_incomplete")
    with caplog.at_level(logging.ERROR, logger="ezpz.tracker"):
        tracker = resolve_tracker(backends="plugin_incomplete")
    assert tracker.backends == ()
    assert any("does not implement finish" in r.getMessage() for r in caplog.records)
