"""Credentials: dotenv loading order, header scoping, redaction."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from ezpz.tracker import mlflow_auth
from ezpz.tracker.mlflow_auth import (
    auth_headers,
    load_credentials,
    redact,
    request_scope,
    scoped_headers,
)

pytest.importorskip("dotenv", reason="python-dotenv is optional")

NAMES = ("EZPZ_T_HOME_ONLY", "EZPZ_T_BOTH", "EZPZ_T_PROJECT_ONLY", "EZPZ_T_SHELL")


@pytest.fixture
def clean_env():
    saved = {name: os.environ.pop(name, None) for name in NAMES}
    yield
    for name, value in saved.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value


def test_dotenv_order_and_no_override(tmp_path, monkeypatch, clean_env, caplog):
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    (home / ".amsc.env").write_text(
        "EZPZ_T_HOME_ONLY=home-secret-1\nEZPZ_T_BOTH=from-home\nEZPZ_T_SHELL=from-home\n"
    )
    (project / ".env").write_text(
        "EZPZ_T_BOTH=from-project\nEZPZ_T_PROJECT_ONLY=project-secret-2\nEZPZ_T_SHELL=from-project\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    os.environ["EZPZ_T_SHELL"] = "from-shell"
    with caplog.at_level(logging.DEBUG, logger="ezpz.tracker.mlflow_auth"):
        added = load_credentials(force=True)
    assert sorted(added) == ["EZPZ_T_BOTH", "EZPZ_T_HOME_ONLY", "EZPZ_T_PROJECT_ONLY"]
    assert os.environ["EZPZ_T_HOME_ONLY"] == "home-secret-1"
    assert os.environ["EZPZ_T_BOTH"] == "from-project"  # the project file wins over ~/.amsc.env
    assert os.environ["EZPZ_T_PROJECT_ONLY"] == "project-secret-2"
    assert os.environ["EZPZ_T_SHELL"] == "from-shell"  # the environment wins over both
    assert "EZPZ_T_HOME_ONLY" in caplog.text  # names are logged ...
    assert "secret" not in caplog.text and "from-" not in caplog.text  # ... values never
    assert load_credentials() == []  # once per process


def test_missing_files_are_fine(tmp_path, monkeypatch, clean_env):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert load_credentials(force=True) == []


def test_auth_headers_from_environment():
    assert auth_headers({"AMSC_API_KEY": "k-1"}) == {"X-API-Key": "k-1"}
    assert auth_headers({"AMSC_API_KEY": "  "}) == {}
    assert auth_headers({}) == {}


def test_redact_hides_secret_values():
    env = {"AMSC_API_KEY": "abcdef123", "MLFLOW_TRACKING_TOKEN": "tok-998877"}
    text = "failed: header X-API-Key: abcdef123, Authorization: Bearer tok-998877"
    assert redact(text, env) == "failed: header X-API-Key: ***, Authorization: Bearer ***"


def test_scope_is_per_thread_and_restored():
    assert scoped_headers() == {}
    seen_in_other_thread = []
    with request_scope({"X-API-Key": "outer"}):
        with request_scope({"X-API-Key": "inner"}):
            assert scoped_headers() == {"X-API-Key": "inner"}
        assert scoped_headers() == {"X-API-Key": "outer"}
        worker = threading.Thread(target=lambda: seen_in_other_thread.append(scoped_headers()))
        worker.start()
        worker.join()
    assert scoped_headers() == {}
    assert seen_in_other_thread == [{}]


def test_mlflow_sends_scoped_headers_only_inside_the_scope():
    pytest.importorskip("mlflow")
    from mlflow.tracking.request_header.registry import (
        _request_header_provider_registry,
        resolve_request_headers,
    )

    mlflow_auth.ensure_provider_registered()
    mlflow_auth.ensure_provider_registered()  # idempotent
    ours = [
        p
        for p in _request_header_provider_registry
        if isinstance(p, mlflow_auth.ScopedHeaderProvider)
    ]
    assert len(ours) == 1
    assert "X-API-Key" not in resolve_request_headers()
    with request_scope({"X-API-Key": "k-2"}):
        assert resolve_request_headers()["X-API-Key"] == "k-2"
    assert "X-API-Key" not in resolve_request_headers()
