"""A training script written against ezpz 0.26 runs here unchanged, end to end (issue 13)."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

# Written the way 0.26 users write their loops: names, arguments and call
# order of ezpz 0.26; torch tensors as metric values.
SCRIPT = textwrap.dedent(
    """
    import ezpz
    import ezpz.tplot
    import torch
    from ezpz.history import History, StopWatch, grab_tensor
    from ezpz.tracker import CSVBackend, MLflowBackend, WandbBackend, setup_tracker
    from ezpz.utils import format_compact_summary, get_memory_metrics

    rank = ezpz.get_rank()
    device = "cpu"
    tracker = setup_tracker(
        project_name="compat-demo", backends="csv", config={"lr": 1e-2}, outdir="csv", rank=rank
    )
    history = History(tracker=tracker)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    timings = []
    for step in range(30):
        with StopWatch("train step", wbtag="timing/step", iter=step) as sw:
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        timings.append(sw.data)
        metrics = {"train/iter": step, "train/loss": loss.detach(), "train/lr": 1e-2}
        metrics |= get_memory_metrics(device, prefix="train/")
        summary = history.update(metrics, summarize=False)
        assert summary == "", summary
        if step % 5 == 0:
            history.update({"eval/loss": loss.detach() * 1.1}, step=step, summarize=False)
            print(format_compact_summary({"iter": step, "loss": float(loss)}))

    assert set(timings[0]) == {"timing/step/dt", "timing/step/iter"}
    assert timings[3]["timing/step/iter"] == 3 and timings[3]["timing/step/dt"] > 0
    assert len(history.data["train/loss"]) == 30
    assert sorted(history.groups) == ["eval", "train"]
    grouped = history.get_grouped_datasets()
    assert grouped["train"].sizes["draw"] == 30 and grouped["eval"].sizes["draw"] == 6
    flat = history.get_dataset()
    assert "train_loss" in flat and "eval_loss" in flat
    plots = history.plot_all()
    assert plots["train"] and all(p.exists() for p in plots["train"])
    history.tplot_all()
    ezpz.tplot.tplot_dict({"loss": history.data["train/loss"]}, outfile="loss.txt")
    ezpz.tplot.tplot(grab_tensor(torch.tensor(history.data["train/loss"])), outfile="t.txt")
    tracker.log_table("lr_schedule", ["step", "lr"], data=[[0, 1e-2], [1, 1e-2]])
    result = history.finalize(save=False, run_name="compat", env_info={"site": "laptop"})
    assert sorted(result) == ["eval", "train"]
    assert CSVBackend.name == "csv" and MLflowBackend.name == "mlflow" and WandbBackend
    print("OUTDIR", history.report_dir / history.run_id)
    """
)


def test_a_0_26_script_runs_end_to_end(tmp_path):
    script = tmp_path / "train_026.py"
    script.write_text(SCRIPT)
    env_out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert env_out.returncode == 0, env_out.stderr[-4000:]
    outdir = next(
        line.split(" ", 1)[1] for line in env_out.stdout.splitlines() if line.startswith("OUTDIR")
    )
    out = tmp_path / outdir
    assert not list(out.glob("*.h5"))  # save=False: no datasets
    assert (out / "plots" / "mplot" / "train" / "loss.png").exists()
    assert (out / "plots" / "tplot" / "eval" / "loss.txt").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "| site | laptop |" in report
    text = (tmp_path / "loss.txt").read_text()
    assert "loss" in text and "\x1b[" not in text
    assert (tmp_path / "t.txt").stat().st_size > 0
    # the tracker got the run: metrics (one row per update and per StopWatch),
    # the 0.26-style table, and the history table under its 0.26 name
    # (finalize moves the csv backend's metrics.csv into the run's outdir)
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert sum(1 for r in rows if r.get("train/loss")) == 30
    assert sum(1 for r in rows if r.get("timing/step")) == 30
    assert (tmp_path / "csv" / "lr_schedule.csv").read_text().splitlines()[0] == "step,lr"
    assert (out / "training_history_train.csv").exists()
    assert "iter=0" in env_out.stdout
