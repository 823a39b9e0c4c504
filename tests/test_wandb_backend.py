"""W&B backend with real offline runs, read back with wandb's own log reader.

``wandb leet inspect --json`` (shipped with wandb) prints the records of a
run's ``.wandb`` transaction log; the tests compare them with what was logged.
"""

from __future__ import annotations

import json
import logging
import math
import os

import pytest

wandb = pytest.importorskip("wandb", reason="wandb is an optional dependency")

from wandb_log import history_rows, read_records, run_config, run_dirs  # noqa: E402

from ezpz.tracker.wandb_backend import WandbBackend, setup_wandb  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def test_offline_run_records_what_was_logged(wandb_dir, tmp_path):
    pil = pytest.importorskip("PIL.Image")
    backend = WandbBackend(
        project_name="ezpz-wandb-test",
        config={"lr": 0.01, "model": {"depth": 3}},
        rank=0,
        world_size=4,
    )
    assert backend.run is not None and backend.owns_run
    logged = []
    for step in range(3):
        metrics = {"loss": 1.0 / (step + 1), "loss/mean": 0.5 + step, "train/acc": 0.1 * step}
        logged.append(metrics)
        backend.log(metrics, step=step)
    backend.log({"nan": float("nan"), "inf": float("inf")}, step=3)
    image = tmp_path / "plot.png"
    pil.new("RGB", (8, 8), (255, 0, 0)).save(image)
    backend.log_table("history", ["step", "loss"], [[0, 1.0], [1, 0.5]])
    backend.log_image("plots/loss", str(image), caption="loss")
    backend.finish()
    assert backend.run is None

    (run_dir,) = run_dirs(wandb_dir)
    records = read_records(run_dir)
    rows = history_rows(records)
    for step, metrics in enumerate(logged):
        row = next(r for r in rows if r["_step"] == step)
        for key, value in metrics.items():
            assert row[key] == pytest.approx(value), (step, key)
    row3 = next(r for r in rows if r["_step"] == 3)
    assert row3["nan"] == "NaN" and row3["inf"] == "Infinity"
    media = {key: value for row in rows for key, value in row.items()}
    assert media["history._type"] == "table-file" and media["history.nrows"] == 2
    table = json.loads((run_dir / "files" / media["history.path"]).read_text())
    assert table["columns"] == ["step", "loss"] and table["data"] == [[0, 1.0], [1, 0.5]]
    assert media["plots/loss._type"] == "image-file"
    assert media["plots/loss.caption"] == "loss"
    assert (run_dir / "files" / media["plots/loss.path"]).is_file()
    config = run_config(records)
    assert config["lr"] == 0.01 and config["model"] == {"depth": 3}
    info = config["ezpz"]
    assert info["world_size"] == 4
    assert info["hostname"] and info["ezpz_version"]
    assert "torch_version" in info  # torch is installed in the test environment
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["project"] == "ezpz-wandb-test"


def test_other_ranks_create_nothing(wandb_dir):
    backend = WandbBackend(project_name="p", rank=1, world_size=2)
    backend.log({"loss": 1.0}, step=0)
    backend.log_config({"a": 1})
    backend.finish()
    assert backend.run is None and not backend.enabled
    assert run_dirs(wandb_dir) == []


def test_wandb_disabled_is_a_logged_no_op(wandb_dir, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_DISABLED", "1")
    with caplog.at_level(logging.INFO, logger="ezpz.tracker.wandb_backend"):
        backend = WandbBackend(project_name="p", rank=0, world_size=1)
    backend.log({"loss": 1.0}, step=0)
    backend.finish()
    assert backend.run is None
    assert "WANDB_DISABLED" in caplog.text
    assert run_dirs(wandb_dir) == []
    assert setup_wandb("p", rank=0, world_size=1) is None


def test_online_without_credentials_falls_back_to_offline(wandb_dir, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(wandb_dir))  # no ~/.netrc: no credentials
    monkeypatch.setenv("NETRC", str(wandb_dir / "no-netrc"))
    with caplog.at_level(logging.WARNING, logger="ezpz.tracker.wandb_backend"):
        backend = WandbBackend(project_name="p", rank=0, world_size=1)
    assert backend.run is not None
    backend.log({"loss": 2.0}, step=0)
    backend.finish()
    assert "logging offline instead" in caplog.text
    (run_dir,) = run_dirs(wandb_dir)
    assert history_rows(read_records(run_dir))[0]["loss"] == 2.0


def test_decreasing_steps_are_dropped_with_one_warning(wandb_dir, caplog):
    backend = WandbBackend(project_name="p", rank=0, world_size=1)
    with caplog.at_level(logging.WARNING, logger="ezpz.tracker.wandb_backend"):
        backend.log({"x": 1.0}, step=5)
        backend.log({"x": 2.0}, step=3)
        backend.log({"x": 3.0}, step=4)
        backend.log({"x": 4.0}, step=6)
    backend.finish()
    assert sum("below the last logged step" in r.getMessage() for r in caplog.records) == 1
    (run_dir,) = run_dirs(wandb_dir)
    assert [(r["_step"], r["x"]) for r in history_rows(read_records(run_dir))] == [
        (5, 1.0),
        (6, 4.0),
    ]


def test_setup_wandb_and_adoption(wandb_dir, monkeypatch):
    monkeypatch.setenv("WB_PROJECT", "from-env")
    run = setup_wandb(config={"seed": 7}, rank=0, world_size=2)
    try:
        assert run is not None and wandb.run is run
        assert run.project == "from-env"
        assert run.config["seed"] == 7 and run.config["ezpz"]["world_size"] == 2
        backend = WandbBackend(rank=0, world_size=2)  # adopts the active run
        assert backend.run is run and not backend.owns_run
        backend.log({"loss": 0.25}, step=0)
        backend.finish()  # the user's run stays open
        assert wandb.run is run
    finally:
        run.finish()
    (run_dir,) = run_dirs(wandb_dir)
    assert history_rows(read_records(run_dir))[0]["loss"] == 0.25


def test_setup_wandb_on_other_ranks_is_a_no_op_run(wandb_dir):
    run = setup_wandb("p", rank=1, world_size=2)
    try:
        run.log({"loss": 1.0})  # harmless
        assert type(run).__name__ == "NoopRun"
    finally:
        run.finish()
    assert run_dirs(wandb_dir) == []


def test_history_with_wandb_backend(wandb_dir, tmp_path):
    from ezpz.history import History

    history = History(
        backends="wandb",
        project_name="ezpz-history-wandb",
        report_dir=tmp_path / "r",
        config={"batch": 32},
    )
    assert history.tracker.wandb_run is not None
    for step in range(4):
        history.update({"train/loss": 1.0 / (step + 1), "lr": 1e-3}, step=step)
    report = history.tracker.finish()
    history.close()
    assert report.ok, report
    (run_dir,) = run_dirs(wandb_dir)
    records = read_records(run_dir)
    rows = history_rows(records)
    assert [r["_step"] for r in rows] == [0, 1, 2, 3]
    assert all(math.isclose(r["train/loss"], 1.0 / (r["_step"] + 1)) for r in rows)
    assert run_config(records)["batch"] == 32
    assert os.environ.get("WANDB_MODE") == "offline"
