"""The deprecated paths with a real (offline) W&B run: adoption and use_wandb=True."""

from __future__ import annotations

import warnings

import pytest

wandb = pytest.importorskip("wandb", reason="wandb is an optional dependency")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    monkeypatch.delenv("EZPZ_TRACKER_BACKENDS", raising=False)
    yield tmp_path
    if wandb.run is not None:
        wandb.run.finish()


def test_history_adopts_the_run_started_by_setup_wandb(offline):
    import ezpz
    from ezpz.history import History

    run = ezpz.setup_wandb(project_name="ezpz-test", rank=0, world_size=1)
    assert run is not None and wandb.run is run
    with pytest.warns(DeprecationWarning, match="active wandb.run"):
        history = History(report_dir=offline / "rep")
    assert history.tracker.backend_names == ("wandb",)
    assert history.tracker.wandb_run is run
    for step in range(3):
        history.update({"loss": 1.0 / (step + 1)}, step=step)
    report = history.tracker.finish(timeout=60)
    history.close()
    assert report.ok, str(report)
    assert report.backends["wandb"].logs_delivered == 3
    assert run.summary["loss"] == pytest.approx(1.0 / 3)
    assert wandb.run is run  # an adopted run is the user's: finish() leaves it open


def test_update_use_wandb_true_warns_and_starts_wandb(offline):
    from ezpz.history import History

    history = History(backends="none", report_dir=offline / "rep", project_name="ezpz-test")
    with pytest.warns(DeprecationWarning, match="use_wandb"):
        history.update({"loss": 0.5}, step=0, use_wandb=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        history.update({"loss": 0.25}, step=1, use_wandb=True)  # warned once already
    run = history.tracker.wandb_run
    assert run is not None
    report = history.tracker.finish(timeout=60)
    history.close()
    assert report.ok, str(report)
    # The step that asked for wandb is delivered too (it is logged after the backend is attached).
    assert report.backends["wandb"].logs_delivered == 2
