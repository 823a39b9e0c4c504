"""``ezpz-history sync``: a real ``mlflow server`` (sqlite) and real wandb offline runs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_runs import CLI, RUN_A, T0, write_run_a, write_run_b  # noqa: I001
from mlflow_server import RecordingProxy, free_port
from wandb_log import read_records

from ezpz.runs.records import read_log

mlflow = pytest.importorskip("mlflow", reason="mlflow is an optional dependency")
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def server(mlflow_server):
    """The session's real ``mlflow server`` (tests/conftest.py): one start-up for all.

    Every test keys its MLflow run by its own ezpz run id.
    """
    return mlflow_server


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_", "WB_"))}
    env.update(extra)
    return env


def _sync(*args: str, uri: str | None = None, **kw) -> subprocess.CompletedProcess:
    env = _env(**({"MLFLOW_TRACKING_URI": uri} if uri else {}), **kw.pop("env", {}))
    return subprocess.run(
        [str(CLI), "sync", *args], capture_output=True, text=True, timeout=500, env=env, **kw
    )


def _client(server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.url)


def _find(client, run_id: str):
    from ezpz.runs.sync import find_mlflow_run

    return find_mlflow_run(client, run_id)


def expected_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """What a live MLflow backend logs for each row: ``X`` -> ``X/local`` beside stats."""
    from ezpz.runs.records import to_float

    out: dict[str, list[tuple[int, float]]] = {}
    for row in read_log(path).rows:
        stats = {k.rsplit("/", 1)[0] for k in row if k.rsplit("/", 1)[-1] in ("mean", "std")}
        for key, raw in row.items():
            value = to_float(raw)
            if key.startswith("_") or value is None:
                continue
            name = f"{key}/local" if key in stats else key
            out.setdefault(name, []).append((row["_step"], value))
    return out


def logged_metrics(client, mlflow_run_id: str, keys) -> dict[str, list[tuple[int, float]]]:
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(mlflow_run_id, key))
        for key in keys
    }


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return len(a) == len(b) and all(
        sa == sb and (va == vb or (math.isnan(va) and math.isnan(vb)))
        for (sa, va), (sb, vb) in zip(sorted(a), sorted(b), strict=True)
    )


def write_finalize_outputs(outdir: Path) -> dict[str, bytes]:
    """What finalize() leaves in a run's outdir (small stand-ins): name -> bytes."""
    files = {
        "report.md": b"# report\n",
        "train.h5": b"\x89HDF\r\n\x1a\n train",
        "metrics.jsonl": b'{"_step": 0}\n',
        "plots/mplot/train/loss.png": _png(1),
        "plots/mplot/history/lr.png": _png(2),
    }
    for name, data in files.items():
        (outdir / name).parent.mkdir(parents=True, exist_ok=True)
        (outdir / name).write_bytes(data)
    return files


def _png(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_sync_mlflow_round_trip_and_idempotent(server, tmp_path):
    path = write_run_a(tmp_path)
    outdir = tmp_path / RUN_A  # finalize's outputs beside the JSONL
    write_finalize_outputs(outdir)

    first = _sync(str(path), "--backends", "mlflow", uri=server.url)
    assert first.returncode == 0, first.stderr
    assert "sekrit" not in first.stdout + first.stderr
    client = _client(server)
    run = _find(client, RUN_A)
    assert run is not None and run.info.status == "FINISHED"
    assert run.info.run_name == "baseline"
    assert run.data.tags["ezpz.run_id"] == RUN_A
    params = run.data.params
    assert params["config.lr"] == "0.001" and params["config.model.depth"] == "4"
    assert params["config.wandb_api_key"] == "<redacted>"
    assert params["ezpz.world_size"] == "4"

    want = expected_metrics(path)
    assert "train/loss/local" in want and "train/loss" not in want
    assert set(run.data.metrics) == set(want)
    got = logged_metrics(client, run.info.run_id, want)
    for key in want:
        assert _same(got[key], want[key]), key
    assert math.isnan(dict(got["train/acc"])[3])  # "NaN" in the JSONL is NaN in MLflow
    history = client.get_metric_history(run.info.run_id, "train/loss/local")
    assert min(m.timestamp for m in history) == int(T0 * 1000)  # timestamps from _time
    sizes = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id)}
    assert sizes["report.md"] == (outdir / "report.md").stat().st_size
    assert sizes["train.h5"] == (outdir / "train.h5").stat().st_size
    assert sizes["metrics.jsonl"] == (outdir / "metrics.jsonl").stat().st_size
    # As the live MLflow backend logs finalize's images: plots/<group>/, the
    # unprefixed group's ("history" directory) straight under plots/.
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")} == {
        "plots/lr.png",
        "plots/train",
    }
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots/train")] == [
        "plots/train/loss.png"
    ]

    again = _sync(str(path), "--backends", "mlflow", uri=server.url)
    assert again.returncode == 0, again.stderr
    assert "sent 0 metric values" in again.stdout
    assert "artifacts" not in again.stdout  # each file once
    assert logged_metrics(client, run.info.run_id, want) == got or all(
        _same(logged_metrics(client, run.info.run_id, [k])[k], want[k]) for k in want
    )
    same_id = f"tags.`ezpz.run_id` = '{RUN_A}'"
    assert len(client.search_runs([run.info.experiment_id], same_id)) == 1


def test_sync_continues_a_growing_run(server, tmp_path):
    run_id = "2026-01-04-120000-dddddd"
    path = write_run_a(tmp_path, steps=40, finalized=False, run_id=run_id)
    assert _sync(str(path), "-b", "mlflow", uri=server.url).returncode == 0
    client = _client(server)
    run = _find(client, run_id)
    assert run.info.status == "RUNNING"  # started, not finalized: more may come
    longer = write_run_a(tmp_path / "more", steps=70, finalized=True, run_id=run_id)
    path.write_bytes(longer.read_bytes())  # the same run, 30 steps further
    proc = _sync(str(path), "-b", "mlflow", uri=server.url)
    assert proc.returncode == 0, proc.stderr
    want = expected_metrics(path)
    got = logged_metrics(client, run.info.run_id, want)
    for key in want:
        assert _same(got[key], want[key]), key
    assert _find(client, run_id).info.status == "FINISHED"


KEYS = 10


def _big_run(path: Path, steps: int) -> None:
    with path.open("w") as fh:
        fh.write(
            json.dumps({"_event": "start", "_time": T0, "run_id": path.stem, "world_size": 2})
            + "\n"
        )
        for i in range(steps):
            row = {"_step": i, "_time": T0 + i}
            row.update({f"train/k{k}": i * 0.5 + k for k in range(KEYS)})
            fh.write(json.dumps(row) + "\n")
        fh.write(json.dumps({"_event": "finalized", "_time": T0 + steps}) + "\n")


HELD_AFTER = 7  # log-batch requests that reach the server before the sync is killed


@pytest.mark.parametrize("workers", ["1", "4"])
def test_sync_killed_halfway_then_rerun(server, tmp_path, workers):
    """SIGKILL mid-sync, rerun: every value once (ordered, and overlapping requests).

    The sync goes through a proxy that lets the params request and 6 metric
    requests (and, with 4 workers, the first carrying the cursor) reach the
    server and holds the later ones: the sync is stuck
    there with requests in flight, is killed, and the held requests are dropped.
    """
    run_id = f"2026-01-03-120000-cccc{workers}{workers}"
    path = tmp_path / f"{run_id}.jsonl"
    steps = 1300  # 13,000 values: 14 requests of at most 999 (+ the cursor tag)
    _big_run(path, steps)
    client = _client(server)
    with RecordingProxy(server.url) as proxy:
        # With overlapping requests the cursor rides on whichever request is
        # sent once the first has completed, and threads reach the proxy in any
        # order: keep forwarding until one carrying the cursor has gone.
        proxy.hold_after(HELD_AFTER, "/runs/log-batch", until=b"ezpz.sync.offset")
        proc = subprocess.Popen(
            [str(CLI), "sync", str(path), "-b", "mlflow", "--workers", workers],
            env=_env(MLFLOW_TRACKING_URI=proxy.url),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 300
            while proxy.held == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.held > 0, f"the sync did not get stuck: {proc.poll()}"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
            proxy.release(forward=False)
        # Requests forwarded before the kill may still be running on the server.
        assert proxy.wait_idle(), "a forwarded request got no answer from the server"
        bodies = [json.loads(r.body) for r in proxy.recorded() if "log-batch" in r.path]
    # One HTTP request per batch: at most 1000 entities (MLflow's limit counts
    # the tag too); in order, each carries the cursor, so none is split by the
    # client into a second request without it. Overlapping: some carry it.
    metric_requests = [b for b in bodies if b.get("metrics")]
    assert len(metric_requests) > HELD_AFTER - 1
    offsets = []  # the cursor values sent, in order: each new, none going back
    for body in metric_requests:
        assert len(body["metrics"]) + len(body.get("tags", [])) <= 1000
        tags = [t["key"] for t in body.get("tags", [])]
        assert tags == ["ezpz.sync.offset"] or (workers != "1" and tags == [])
        offsets += [int(t["value"]) for t in body.get("tags", [])]
    assert offsets and offsets == sorted(set(offsets)) and offsets[0] > 0
    assert len(offsets) == len(metric_requests) or workers != "1"
    run = _find(client, run_id)
    cursor = int(run.data.tags.get("ezpz.sync.offset", 0))
    assert 0 < cursor < path.stat().st_size
    assert run.info.status == "RUNNING"
    partial = len(client.get_metric_history(run.info.run_id, "train/k0"))
    assert 0 < partial < steps

    done = _sync(str(path), "-b", "mlflow", "--workers", workers, uri=server.url)
    assert done.returncode == 0, done.stderr
    for k in range(KEYS):
        history = client.get_metric_history(run.info.run_id, f"train/k{k}")
        assert sorted((m.step, m.value) for m in history) == [
            (i, i * 0.5 + k) for i in range(steps)
        ]
    assert _find(client, run_id).info.status == "FINISHED"
    assert (
        len(client.search_runs([run.info.experiment_id], f"tags.`ezpz.run_id` = '{run_id}'")) == 1
    )


def test_dry_run_sends_nothing(server, tmp_path):
    path = write_run_b(tmp_path)
    proc = _sync(str(path), "-b", "mlflow,csv", "--dry-run", uri=server.url)
    assert proc.returncode == 0, proc.stderr
    assert "would send 450 metric values from 150 rows" in proc.stdout
    assert _find(_client(server), "2026-01-02-120000-bbbbbb") is None
    assert not (tmp_path / "2026-01-02-120000-bbbbbb" / "metrics.csv").exists()


def test_unreachable_server_is_a_clear_error(tmp_path):
    path = write_run_b(tmp_path)
    started = time.monotonic()
    proc = _sync(str(path), "-b", "mlflow", uri=f"http://user:pw@127.0.0.1:{free_port()}")
    assert proc.returncode == 1
    assert "cannot reach the MLflow server" in proc.stderr and "nothing was sent" in proc.stderr
    assert "pw@" not in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 120  # no minutes of retries (not a timing assert on speed)


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (None, 2, "no run"),
        ("", 1, "empty"),
        ('{"name": "a"}\n{"name": "b"}\n', 1, "not an ezpz JSONL"),
    ],
)
def test_bad_input(tmp_path, content, code, message):
    path = tmp_path / "run.jsonl"
    if content is not None:
        path.write_text(content)
    proc = _sync(str(path), "-b", "mlflow", uri="http://127.0.0.1:9")
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_backend_is_usage_error(tmp_path):
    proc = _sync(str(write_run_b(tmp_path)), "-b", "mlflow,nosuch")
    assert proc.returncode == 2 and "nosuch" in proc.stderr


def test_csv_sync(tmp_path):
    import csv

    path = write_run_a(tmp_path)
    out = tmp_path / "csv"
    for _ in range(2):  # a second sync rebuilds the same files
        proc = _sync(str(path), "-b", "csv", "--csv-dir", str(out))
        assert proc.returncode == 0, proc.stderr
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(read_log(path).rows)
    assert float(rows[-1]["train/loss"]) == pytest.approx(2.0 / 100)
    config = json.loads((out / "config.json").read_text())
    assert config["wandb_api_key"] == "<redacted>" and config["model"] == {"depth": 4}


def test_wandb_offline_sync(tmp_path):
    """Rows, config and finalize's outputs, read back from the offline run with wandb's tools."""
    pytest.importorskip("wandb", reason="wandb is an optional dependency")
    import base64
    import hashlib

    path = write_run_a(tmp_path, steps=40)
    outputs = write_finalize_outputs(tmp_path / RUN_A)
    wandb_dir = tmp_path / "wb"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(wandb_dir),
        "WANDB_SILENT": "true",
        "WANDB_DATA_DIR": str(tmp_path / "wb-data"),  # artifact staging
        "WANDB_CACHE_DIR": str(tmp_path / "wb-cache"),
    }
    proc = _sync(str(path), "-b", "wandb", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "5 artifacts" in proc.stdout
    (run_dir,) = (wandb_dir / "wandb").glob(f"offline-run-*-{RUN_A}")
    records = read_records(run_dir)
    rows = [r["history"]["item"] for r in records if r["type"] == "history"]
    steps = []
    for row in rows:
        step = int(row["_step"])
        steps.append(step)
        want = 2.0 / (step + 1) + 0.01 * (step % 3)
        assert row["train/loss"] == pytest.approx(want)
        assert row["train/loss/std"] == pytest.approx(0.02 + 0.001 * (step % 5))
        if step % 10 == 0:
            assert row["eval/acc"] == pytest.approx(step / 100)
    assert "sekrit" not in json.dumps(records)  # the config went through redaction
    assert steps == list(range(40))  # every step, eval rows merged into their step

    # finalize's PNGs: wandb images under the live plot keys, in the last row,
    # their files in the run directory byte for byte.
    last = rows[-1]
    for key, name in (("plots/train/loss", "train/loss.png"), ("plots/lr", "history/lr.png")):
        assert last[f"{key}._type"] == "image-file"
        assert last[f"{key}.caption"] == Path(name).stem
        image = run_dir / "files" / last[f"{key}.path"]
        assert image.read_bytes() == outputs[f"plots/mplot/{name}"]
    assert not any(k.endswith("._type") for row in rows[:-1] for k in row)
    # finalize's files: one ezpz-output artifact each, named after the file.
    artifacts = {r["artifact"]["name"]: r["artifact"] for r in records if r["type"] == "artifact"}
    assert set(artifacts) == {"report.md", "train.h5", "metrics.jsonl"}
    for name, artifact in artifacts.items():
        assert artifact["type"] == "ezpz-output"
        (entry,) = artifact["manifest"]["contents"]
        md5 = base64.b64encode(hashlib.md5(outputs[name]).digest()).decode()
        assert (entry["path"], int(entry["size"]), entry["digest"]) == (
            name,
            len(outputs[name]),
            md5,
        )

    again = _sync(str(path), "-b", "wandb", env=env)
    assert again.returncode == 0, again.stderr
    assert "sent 0 metric values" in again.stdout and "artifacts" not in again.stdout
    # Nothing new: no resumed run at all (no second offline run directory).
    assert list((wandb_dir / "wandb").glob(f"offline-run-*-{RUN_A}")) == [run_dir]
    # A file finalize rewrote goes again (only that one).
    (tmp_path / RUN_A / "report.md").write_text("# report, finalized again\n")
    dry = _sync(str(path), "-b", "wandb", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would send 0 metric values" in dry.stdout and ", 1 artifacts" in dry.stdout
