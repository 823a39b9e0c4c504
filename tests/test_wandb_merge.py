"""Issue 12 item 17: updates that share a step reach wandb as one row, in any order.

The nanoGPT pattern of docs/finalize.md: a train ``update()`` every step and
an eval ``update()`` at the same step every 50 steps. On main wandb dropped
every eval row ("Tried to log to step 50 that is less than the current step
51"). Checked with the real wandb library offline, read back with wandb's
own ``wandb leet inspect``; the csv keeps one row per ``update()``.
"""

from __future__ import annotations

import logging

import pytest

wandb = pytest.importorskip("wandb", reason="wandb is an optional dependency")

from wandb_log import history_rows, read_records, run_dirs  # noqa: E402

pytestmark = pytest.mark.timeout(300)

STEPS = 201  # steps 0..200, eval at 0, 50, 100, 150, 200
EVAL_EVERY = 50


@pytest.mark.parametrize("eval_first", [False, True], ids=["train-then-eval", "eval-then-train"])
def test_same_step_updates_are_one_wandb_row(wandb_dir, tmp_path, caplog, eval_first):
    import pandas as pd

    from ezpz.history import History

    history = History(
        backends="wandb,csv",
        project_name="ezpz-merge",
        outdir=tmp_path / "out",
        report_dir=tmp_path / "out",
    )
    n_updates = 0
    with caplog.at_level(logging.WARNING):
        for step in range(STEPS):
            train = {"train/loss": 1.0 / (step + 1), "train/lr": 1e-3}
            evals = {"eval/loss": 2.0 / (step + 1)} if step % EVAL_EVERY == 0 else None
            for metrics in [evals, train] if eval_first else [train, evals]:
                if metrics is not None:
                    history.update(metrics, step=step)  # no commit=False needed
                    n_updates += 1
        report = history.tracker.finish()
        history.close()
    assert report.ok, report
    assert "below the last logged step" not in caplog.text

    (run_dir,) = run_dirs(wandb_dir)
    rows = [r for r in history_rows(read_records(run_dir)) if "train/loss" in r or "eval/loss" in r]
    assert [r["_step"] for r in rows] == list(range(STEPS))  # one row per step, none dropped
    for row in rows:
        step = row["_step"]
        assert row["train/loss"] == pytest.approx(1.0 / (step + 1))
        if step % EVAL_EVERY == 0:
            assert row["eval/loss"] == pytest.approx(2.0 / (step + 1)), step
        else:
            assert "eval/loss" not in row, step

    df = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert len(df) == n_updates == STEPS + 5  # the csv: one row per update()
    assert df["eval/loss"].notna().sum() == 5


def test_backend_merges_held_row_and_attaches_media(wandb_dir, tmp_path):
    from ezpz.tracker.wandb_backend import WandbBackend

    backend = WandbBackend(project_name="p", rank=0, world_size=1)
    backend.log({"a": 1.0}, step=0)
    backend.log({"b": 2.0}, step=0, commit=True)
    backend.log({"a": 3.0}, step=1, commit=False)
    backend.log({"timing": 0.5})  # no step (a StopWatch): joins the held step 1
    backend.log({"a": 4.0}, step=1)  # the later value of a key wins
    backend.log_table("t", ["x"], [[1]])  # joins the held row (step 1)
    backend.log({"a": 5.0}, step=0)  # below the last step: dropped with a warning
    backend.finish()  # the held row is sent
    (run_dir,) = run_dirs(wandb_dir)
    rows = history_rows(read_records(run_dir))
    assert [(r["_step"], r.get("a"), r.get("b")) for r in rows] == [(0, 1.0, 2.0), (1, 4.0, None)]
    assert rows[1]["t._type"] == "table-file" and rows[1]["timing"] == 0.5
