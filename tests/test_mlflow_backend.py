"""MLflow backend against a real sqlite tracking store (no server): what lands in the run."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow", reason="mlflow is an optional dependency")

from mlflow import MlflowClient  # noqa: E402
from mlflow_server import free_port  # noqa: E402

from ezpz.tracker.mlflow_backend import (  # noqa: E402
    MlflowBackend,
    as_metric_value,
    flatten_params,
    mlflow_name,
    setup_mlflow,
)


@pytest.fixture(autouse=True)
def no_standalone_run_left_behind():
    # setup_mlflow() makes later backends log into its run: never across tests.
    yield
    from ezpz.tracker import mlflow_backend

    mlflow_backend._set_standalone(None)


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    # A sqlite store's default artifact root is ./mlruns: keep it out of the checkout.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    # One database per module: creating MLflow's tables takes seconds.
    path = tmp_path_factory.mktemp("mlflow-sqlite") / "mlflow.db"
    return f"sqlite:///{path}"


def _history(client, run_id, key):
    return [
        (m.step, m.value)
        for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    ]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("loss", "loss"),
        ("train/loss", "train/loss"),
        ("loss (±)", "loss ___"),
        ("a//b/", "a/b"),
        ("/lead", "lead"),
        ("x/../y", "x/_/y"),
        ("./x", "_/x"),
        ("ok:colon-dash.dot", "ok:colon-dash.dot"),
        ("", "_"),
        ("k" * 300, "k" * 250),
    ],
)
def test_mlflow_name_mapping(key, expected):
    assert mlflow_name(key) == expected


def test_mlflow_names_pass_mlflow_validation():
    from mlflow.utils.validation import _validate_metric_name

    for key in ["a//b", "../up", "weird ± key", "tab\tkey", "/", "x/./y", "é/ok"]:
        _validate_metric_name(mlflow_name(key))  # raises on a name MLflow rejects


def test_as_metric_value():
    assert as_metric_value(True) == 1.0
    assert as_metric_value(3) == 3.0
    assert as_metric_value(np.float32(0.5)) == 0.5
    assert as_metric_value(np.array(2.5)) == 2.5
    assert as_metric_value(np.array([7.0])) == 7.0
    assert np.isnan(as_metric_value(float("nan")))
    assert as_metric_value(np.array([1.0, 2.0])) is None
    assert as_metric_value("text") is None
    assert as_metric_value(None) is None


def test_flatten_params_dot_joins_nested_keys():
    flat = flatten_params({"lr": 0.1, "model": {"depth": 4, "act": {"name": "gelu"}}, "e": {}}, "c")
    assert flat == {"c.lr": "0.1", "c.model.depth": "4", "c.model.act.name": "gelu", "c.e": "{}"}


def test_run_contents(sqlite_uri, tmp_path):
    backend = MlflowBackend(
        project_name="ezpz-test-contents",
        config={"lr": 1e-3, "model": {"depth": 4, "width": 128}},
        rank=0,
        world_size=4,
        tracking_uri=sqlite_uri,
        system_metrics=False,
    )
    assert backend.run_id is None  # nothing touched the store yet
    # Statistics present: raw value renamed X/local; no statistics: kept as is.
    backend.log({"loss": 1.0, "loss/mean": 0.9, "loss/min": 0.5, "loss/max": 1.0, "loss/std": 0.2})
    backend.log({"loss": 0.8, "loss/mean": 0.7, "lr": 1e-3})
    backend.log({"acc": 0.5}, commit=False)  # same step as the next commit
    backend.log({"loss": 0.6})
    backend.log({"loss": 0.4}, step=10)
    backend.log({"loss": 0.3})  # continues after the explicit step
    artifact = tmp_path / "metrics.jsonl"
    artifact.write_text('{"loss": 1.0}\n')
    backend.log_artifact(str(artifact))
    backend.log_table("train/history", ["step", "loss"], [[0, 1.0], [1, 0.8]])
    backend.finish()

    client = MlflowClient(sqlite_uri)
    run = client.get_run(backend.run_id)
    assert run.info.status == "FINISHED"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "ezpz-test-contents"
    params = run.data.params
    assert params["config.lr"] == "0.001"
    assert params["config.model.depth"] == "4"
    assert params["config.model.width"] == "128"
    assert params["ezpz.world_size"] == "4"
    assert params["ezpz.hostname"]
    assert params["ezpz.ezpz_version"]
    assert _history(client, backend.run_id, "loss/local") == [(0, 1.0), (1, 0.8)]
    assert _history(client, backend.run_id, "loss/mean") == [(0, 0.9), (1, 0.7)]
    assert _history(client, backend.run_id, "loss") == [(2, 0.6), (10, 0.4), (11, 0.3)]
    assert _history(client, backend.run_id, "acc") == [(2, 0.5)]
    assert _history(client, backend.run_id, "lr") == [(1, 1e-3)]
    top = {a.path for a in client.list_artifacts(backend.run_id)}
    assert top == {"metrics.jsonl", "tables"}
    local = client.download_artifacts(backend.run_id, "tables/train/history.csv", str(tmp_path))
    with open(local) as fh:
        assert fh.read().splitlines() == ["step,loss", "0,1.0", "1,0.8"]


def test_non_finite_values(sqlite_uri):
    backend = MlflowBackend(
        project_name="ezpz-test-nonfinite",
        rank=0,
        world_size=1,
        tracking_uri=sqlite_uri,
        system_metrics=False,
    )
    backend.log({"nan": float("nan"), "pinf": float("inf"), "ninf": -float("inf")})
    backend.finish()
    metrics = MlflowClient(sqlite_uri).get_run(backend.run_id).data.metrics
    assert np.isnan(metrics["nan"])
    # MLflow's SQL store clamps infinities to the largest finite double.
    assert metrics["pinf"] == np.finfo(np.float64).max
    assert metrics["ninf"] == -np.finfo(np.float64).max


def test_skipped_values_and_renames_warn_once(sqlite_uri, caplog):
    backend = MlflowBackend(
        project_name="ezpz-test-skip",
        rank=0,
        world_size=1,
        tracking_uri=sqlite_uri,
        system_metrics=False,
    )
    with caplog.at_level(logging.WARNING, logger="ezpz.tracker.mlflow_backend"):
        for i in range(3):
            backend.log({"vec": np.arange(3.0), "name": "x", "bad key?": float(i)})
    backend.finish()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("'vec'" in m for m in messages) == 1
    assert sum("'name'" in m for m in messages) == 1
    assert sum("'bad key_'" in m for m in messages) == 1
    metrics = MlflowClient(sqlite_uri).get_run(backend.run_id).data.metrics
    assert metrics == {"bad key_": 2.0}


def test_params_are_immutable_first_value_kept(sqlite_uri, caplog):
    backend = MlflowBackend(
        project_name="ezpz-test-params",
        config={"lr": 0.1},
        rank=0,
        world_size=1,
        tracking_uri=sqlite_uri,
        system_metrics=False,
    )
    backend.log_config({"lr": 0.1, "bs": 8})  # same value again: fine
    with caplog.at_level(logging.WARNING, logger="ezpz.tracker.mlflow_backend"):
        backend.log_config({"lr": 0.2})
    backend.log({"x": 1.0})
    backend.finish()
    params = MlflowClient(sqlite_uri).get_run(backend.run_id).data.params
    assert params["config.lr"] == "0.1" and params["config.bs"] == "8"
    assert any("config.lr" in r.getMessage() for r in caplog.records)


def test_other_ranks_do_nothing(tmp_path):
    db = tmp_path / "never.db"
    backend = MlflowBackend(rank=1, world_size=2, tracking_uri=f"sqlite:///{db}")
    backend.log({"loss": 1.0})
    backend.log_config({"a": 1})
    backend.log_artifact(__file__)
    backend.finish()
    assert backend.client is None and backend.run_id is None
    assert not db.exists()


def test_unreachable_server_never_blocks_and_reports(monkeypatch, caplog):
    # Nothing listens on this port: every request is refused at once.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"http://127.0.0.1:{free_port()}"
    backend = MlflowBackend(
        project_name="nowhere",
        rank=0,
        world_size=1,
        tracking_uri=url,
        max_pending=5,
        system_metrics=False,
    )
    with caplog.at_level(logging.WARNING, logger="ezpz.tracker.mlflow_backend"):
        for i in range(10):
            backend.log({"loss": float(i)})  # returns; values wait in the buffer
        assert len(backend._pending) == 5 and backend.dropped == 5
        backend.finish()
    text = caplog.text
    assert text.count("cannot reach") == 1  # one warning for the outage, not one per call
    assert "undelivered at finish: 5 metric values" in text
    assert backend.run_id is None


def test_setup_mlflow_run_is_reused_by_the_next_backend(sqlite_uri):
    standalone = setup_mlflow(
        "ezpz-test-standalone", rank=0, world_size=1, tracking_uri=sqlite_uri, system_metrics=False
    )
    assert standalone is not None and standalone.run_id
    backend = MlflowBackend(rank=0, world_size=1, system_metrics=False)
    assert backend.run_id == standalone.run_id
    assert backend.tracking_uri == sqlite_uri
    backend.log({"loss": 0.5})
    backend.finish()
    run = MlflowClient(sqlite_uri).get_run(standalone.run_id)
    assert run.data.metrics == {"loss": 0.5}
    assert run.info.status == "FINISHED"
    assert setup_mlflow(rank=3, world_size=4, tracking_uri=sqlite_uri) is None


def test_system_metrics_logged_and_stopped(sqlite_uri, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    backend = MlflowBackend(
        project_name="ezpz-test-sysmetrics", rank=0, world_size=1, tracking_uri=sqlite_uri
    )
    assert backend.start()
    client = MlflowClient(sqlite_uri)
    deadline = time.monotonic() + 60
    keys: set[str] = set()
    while time.monotonic() < deadline and not keys:
        keys = {k for k in client.get_run(backend.run_id).data.metrics if k.startswith("system/")}
        time.sleep(0.2)
    backend.finish()
    assert any("cpu_utilization" in k for k in keys), keys
    assert not [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]


def test_history_with_mlflow_backend(sqlite_uri, tmp_path, monkeypatch):
    from ezpz.history import History

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    history = History(
        backends="mlflow",
        project_name="ezpz-test-history",
        report_dir=tmp_path,
        config={"opt": {"lr": 0.01}},
    )
    for i in range(5):
        history.update({"train/loss": 1.0 / (i + 1), "eval/acc": 0.1 * i}, step=i)
    backend = history.tracker.get_backend("mlflow")
    report = history.tracker.finish()
    history.close()
    assert report.ok, report
    client = MlflowClient(sqlite_uri)
    run = client.get_run(backend.run_id)
    assert run.data.params["config.opt.lr"] == "0.01"
    assert _history(client, backend.run_id, "train/loss") == [(i, 1.0 / (i + 1)) for i in range(5)]
    assert [s for s, _ in _history(client, backend.run_id, "eval/acc")] == list(range(5))
