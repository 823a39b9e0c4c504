"""Issue 12 items 6, 8, 20: one redaction policy in every output ezpz writes or sends.

A config with secrets at several depths goes through a real run; every file
the run leaves (``metrics.jsonl``'s start record, ``config.json``, the
``.h5`` attributes, ``report.md``, csv tables) and what MLflow (sqlite store,
params and artifacts, the uploaded ``.h5`` included) and wandb (offline run,
read back with wandb's own tooling) received are searched for the secret
values, byte for byte. Non-secrets (``max_tokens``, ``tokenizer``) stay.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

SECRETS = ("S3CRET-api", "S3CRET-db", "S3CRET-hf", "S3CRET-aws", "S3CRET-url")
CONFIG = {
    "lr": 0.01,
    "max_tokens": 4096,
    "tokenizer": "gpt2",
    "wandb": {"api_key": "S3CRET-api", "project": "demo"},
    "servers": [{"name": "db", "db_password": "S3CRET-db"}],
    "model": {"hub": {"auth": {"hf_token": "S3CRET-hf"}}},
    "AWS_SECRET_ACCESS_KEY": "S3CRET-aws",
    "data_url": "s3://someone:S3CRET-url@bucket/path",
}


@pytest.fixture(autouse=True)
def _policy_on(monkeypatch):
    monkeypatch.delenv("EZPZ_LOG_SECRETS", raising=False)
    monkeypatch.setenv("EZPZ_TRACK_MEMORY", "0")


def _leaks(root: Path) -> dict[str, list[str]]:
    """{file: [secret values found in its bytes]} under ``root``."""
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits = [s for s in SECRETS if s.encode() in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def _run(tmp_path: Path, backends: str, steps: int = 4):
    from ezpz.history import History

    out = tmp_path / "out"
    history = History(backends=backends, outdir=out, report_dir=out, config=CONFIG)
    for step in range(steps):
        history.update({"train/loss": 1.0 / (step + 1), "eval/acc": 0.1 * step}, step=step)
    history.finalize(outdir=out)
    return history, out


def _check_h5_attrs(path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["config"])
    assert cfg["wandb"] == {"api_key": "<redacted>", "project": "demo"}
    assert cfg["model"]["hub"]["auth"]["hf_token"] == "<redacted>"
    assert cfg["servers"][0] == {"name": "db", "db_password": "<redacted>"}
    assert cfg["max_tokens"] == 4096 and cfg["tokenizer"] == "gpt2"


def test_files_of_a_csv_run_hold_no_secret(tmp_path):
    history, out = _run(tmp_path, "csv")
    assert _leaks(tmp_path) == {}
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "report.md", "metrics.jsonl", "train.h5", "eval.h5"} <= files
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["AWS_SECRET_ACCESS_KEY"] == "<redacted>" and cfg["max_tokens"] == 4096
    assert cfg["data_url"] == "s3://***@bucket/path"
    _check_h5_attrs(out / "train.h5")
    from ezpz.history.jsonl import read_events

    # the JSONL's start record (lifecycle events) carries the redacted config
    (start,) = [e for e in read_events(out / "metrics.jsonl") if e["_event"] == "start"]
    assert start["config"]["model"]["hub"]["auth"]["hf_token"] == "<redacted>"
    assert start["config"]["max_tokens"] == 4096
    assert '"tokenizer": "gpt2"' in (out / "report.md").read_text()
    assert history.config["wandb"]["api_key"] == "S3CRET-api"  # the user's dict is untouched


def test_opt_out_logs_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("EZPZ_LOG_SECRETS", "1")
    _, out = _run(tmp_path, "csv", steps=2)
    assert json.loads((out / "config.json").read_text())["wandb"]["api_key"] == "S3CRET-api"
    import h5py

    with h5py.File(out / "train.h5", "r") as f:
        cfg = json.loads(f.attrs["config"])
    assert cfg["model"]["hub"]["auth"]["hf_token"] == "S3CRET-hf"


def test_mlflow_params_and_artifacts_hold_no_secret(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # the sqlite store's artifacts go to ./mlruns here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    history, out = _run(tmp_path, "mlflow")
    backend = history.tracker.get_backend("mlflow")
    client = MlflowClient(uri)
    params = client.get_run(backend.run_id).data.params
    assert params["config.wandb.api_key"] == "<redacted>"
    assert params["config.model.hub.auth.hf_token"] == "<redacted>"
    assert params["config.max_tokens"] == "4096" and params["config.tokenizer"] == "gpt2"
    assert not [k for k, v in params.items() if "S3CRET" in v]

    dest = tmp_path / "artifacts"
    dest.mkdir()
    client.download_artifacts(backend.run_id, "", str(dest))
    assert _leaks(tmp_path) == {}  # outdir, the downloaded artifacts and the store
    uploaded = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert "train.h5" in uploaded and "report.md" in uploaded
    _check_h5_attrs(dest / "train.h5")
    # item 20: plots land where docs/backends.md says: plots/<group>/<metric>.png
    plots = sorted(p for p in uploaded if p.endswith(".png"))
    assert plots and all(p.startswith(("plots/train/", "plots/eval/")) for p in plots), plots
    assert not [p for p in uploaded if p.startswith("plots/plots/")]
    tables = {"tables/training_history/train.csv", "tables/training_history/eval.csv"}
    assert tables <= uploaded, " ".join(sorted(uploaded))


def test_wandb_config_holds_no_secret(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from wandb_log import read_records, run_config, run_dirs

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    wandb.teardown()
    try:
        _run(tmp_path, "wandb", steps=2)
    finally:
        wandb.teardown()
    (run_dir,) = run_dirs(tmp_path)
    config = run_config(read_records(run_dir))
    assert config["wandb"] == {"api_key": "<redacted>", "project": "demo"}
    assert config["AWS_SECRET_ACCESS_KEY"] == "<redacted>" and config["max_tokens"] == 4096
    assert _leaks(tmp_path) == {}  # the run directory (.wandb log, files/) included


def test_mlflow_uri_password_never_logged(tmp_path, monkeypatch, caplog):
    """Item 6: an unreachable server with user:pass in MLFLOW_TRACKING_URI."""
    pytest.importorskip("mlflow")
    from mlflow_server import free_port

    from ezpz.tracker.mlflow_backend import MlflowBackend

    uri = f"http://alice:S3CRET-pw@127.0.0.1:{free_port()}/"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    with caplog.at_level(logging.DEBUG):
        backend = MlflowBackend(project_name="p", rank=0, world_size=1)
        backend.log({"x": 1.0}, step=0)
        backend.log_config({"a": 1})
        backend.finish()
    text = caplog.text + "".join(
        (r.exc_text or "") for r in caplog.records
    )  # messages and tracebacks
    assert "cannot reach http://***@127.0.0.1" in caplog.text
    assert "S3CRET-pw" not in text


def test_custom_backends_get_the_redacted_config(tmp_path):
    from ezpz.history import History
    from ezpz.tracker import TrackerBackend, register_backend, unregister_backend

    seen: list = []

    class Recorder(TrackerBackend):
        name = "redact-recorder"

        def __init__(self, config=None, **_):
            seen.append(config)

        def log(self, metrics, step=None, commit=True):
            pass

        def log_config(self, config):
            seen.append(config)

        def finish(self):
            pass

    register_backend(Recorder.name, Recorder)
    try:
        history = History(backends=Recorder.name, outdir=tmp_path / "out", config=CONFIG)
        history.tracker.log_config({"extra": {"hf_token": "S3CRET-hf"}})
        history.tracker.finish()
        history.close()
    finally:
        unregister_backend(Recorder.name)
    assert seen and "S3CRET" not in repr(seen)
    assert any(c and c.get("wandb", {}).get("api_key") == "<redacted>" for c in seen)
