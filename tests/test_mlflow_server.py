"""MLflow backend against a real ``mlflow server`` on 127.0.0.1 (sqlite store).

One server for the test session (start-up is 5-30 s on a loaded 2-core
machine: the ``mlflow_server`` fixture of tests/conftest.py). The
header and outage tests talk to it through ``RecordingProxy``, which records
every request and can close its port (connection refused, as when a server
goes away) and open it again.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

pytest.importorskip("mlflow", reason="mlflow is an optional dependency")

from mlflow import MlflowClient  # noqa: E402
from mlflow_server import RecordingProxy  # noqa: E402

from ezpz.tracker.mlflow_backend import MlflowBackend  # noqa: E402

pytestmark = pytest.mark.timeout(600)

LOG_BATCH = "/api/2.0/mlflow/runs/log-batch"


@pytest.fixture(scope="module")
def server(mlflow_server):
    # The session's server (tests/conftest.py), shared with other modules.
    return mlflow_server


def _steps(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_metrics_params_artifacts_round_trip(server, tmp_path):
    backend = MlflowBackend(
        project_name="ezpz-server-roundtrip",
        config={"optimizer": {"name": "adam", "betas": {"b1": 0.9}}},
        rank=0,
        world_size=8,
        tracking_uri=server.url,
        system_metrics=False,
    )
    for i in range(4):
        backend.log({"loss": 1.0 - 0.1 * i, "loss/mean": 0.5, "loss/std": 0.01 * i})
    backend.log({"nan": float("nan"), "inf": float("inf")})
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    plot = tmp_path / "loss.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\nnot-really")
    backend.log_artifact(str(report))
    backend.log_image("train/loss", str(plot))
    backend.finish()

    client = MlflowClient(server.url)
    run = client.get_run(backend.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "ezpz-server-roundtrip"
    assert run.data.params["config.optimizer.name"] == "adam"
    assert run.data.params["config.optimizer.betas.b1"] == "0.9"
    assert run.data.params["ezpz.world_size"] == "8"
    assert _steps(client, backend.run_id, "loss/local") == [(i, 1.0 - 0.1 * i) for i in range(4)]
    assert [s for s, _ in _steps(client, backend.run_id, "loss/std")] == [0, 1, 2, 3]
    metrics = run.data.metrics
    assert metrics["nan"] != metrics["nan"]  # NaN survives the REST round trip
    assert metrics["inf"] > 1e300  # stored as the largest finite double
    paths = {a.path for a in client.list_artifacts(backend.run_id)}
    assert paths == {"report.md", "plots"}
    got = client.download_artifacts(backend.run_id, "plots/train/loss.png", str(tmp_path / "dl"))
    with open(got, "rb") as fh:
        assert fh.read() == plot.read_bytes()


def test_one_log_batch_request_per_log_call(server):
    with RecordingProxy(server.url) as proxy:
        backend = MlflowBackend(
            project_name="ezpz-server-batching",
            rank=0,
            world_size=1,
            tracking_uri=proxy.url,
            system_metrics=False,
        )
        backend.start()
        before = len(proxy.recorded())
        for i in range(6):
            backend.log({f"m{j}": float(i * j) for j in range(25)}, step=i)
        batches = [r for r in proxy.recorded()[before:] if r.path == LOG_BATCH]
        backend.finish()
    assert len(batches) == 6
    for request in batches:
        assert len(json.loads(request.body)["metrics"]) == 25


def test_auth_headers_reach_the_server_only_for_ezpz(server, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-sekrit-4711")
    monkeypatch.setenv("AMSC_API_KEY", "key-sekrit-0815")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    artifact = tmp_path / "metrics.jsonl"
    artifact.write_text("{}\n")
    with RecordingProxy(server.url) as proxy, caplog.at_level(logging.DEBUG):
        backend = MlflowBackend(
            project_name="ezpz-server-auth",
            config={"lr": 0.1},
            rank=0,
            world_size=1,
            tracking_uri=proxy.url,
            system_metrics=True,
        )
        backend.log({"loss": 1.0})
        backend.log_artifact(str(artifact))
        # Let MLflow's system-metrics thread send at least one batch of its own.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            b"system/" in r.body for r in proxy.recorded()
        ):
            time.sleep(0.1)
        backend.finish()
        ezpz_requests = proxy.recorded()
        # Another user of MLflow in the same process, same thread, same server:
        MlflowClient(proxy.url).search_experiments()
        other = proxy.recorded()[len(ezpz_requests) :]

    assert any(b"system/" in r.body for r in ezpz_requests), "no system-metrics request seen"
    assert any(r.method == "PUT" and "artifacts" in r.path for r in ezpz_requests)
    for request in ezpz_requests:
        assert request.headers.get("X-API-Key") == "key-sekrit-0815", request.path
        assert request.headers.get("Authorization") == "Bearer tok-sekrit-4711", request.path
    assert other and all("X-API-Key" not in r.headers for r in other)
    # The secrets are nowhere in the run or in the logs.
    run = MlflowClient(server.url).get_run(backend.run_id)
    stored = json.dumps([run.data.params, run.data.tags])
    for secret in ("tok-sekrit-4711", "key-sekrit-0815"):
        assert secret not in stored
        assert secret not in caplog.text


def test_server_outage_loses_nothing_and_never_blocks(server, tmp_path, monkeypatch, caplog):
    from ezpz.history import History

    # One quick attempt per request while the server is away (the default is 7
    # retries with back-off; see docs/backends.md).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    with RecordingProxy(server.url) as proxy, caplog.at_level(logging.INFO):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
        jsonl = tmp_path / "metrics.jsonl"
        history = History(
            backends="mlflow",
            project_name="ezpz-server-outage",
            report_dir=tmp_path,
            jsonl_path=jsonl,
        )
        backend = history.tracker.get_backend("mlflow")
        for step in range(20):
            history.update({"loss": 1.0 / (step + 1)}, step=step)
        assert history.tracker.flush(timeout=120)
        assert backend.run_id is not None
        proxy.stop()  # the server goes away
        for step in range(20, 60):
            history.update({"loss": 1.0 / (step + 1)}, step=step)
        assert history.tracker.flush(timeout=120)  # the worker kept up: nothing stuck
        assert backend._failures > 0 and len(backend._pending) > 0
        proxy.start()  # ... and comes back
        for step in range(60, 80):
            history.update({"loss": 1.0 / (step + 1)}, step=step)
        report = history.tracker.finish()
        history.close()
    assert report.ok, report
    assert "cannot reach" in caplog.text and "reachable again" in caplog.text
    with open(jsonl) as fh:
        jsonl_steps = [json.loads(line).get("_step") for line in fh if line.strip()]
    jsonl_steps = [s for s in jsonl_steps if s is not None]  # lifecycle events aside
    assert jsonl_steps == list(range(80))
    client = MlflowClient(server.url)
    got = _steps(client, backend.run_id, "loss")
    assert got == [(s, 1.0 / (s + 1)) for s in range(80)]
    assert client.get_run(backend.run_id).info.status == "FINISHED"
