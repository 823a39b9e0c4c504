"""Fault suite, files: read-only outdir, /dev/full, RLIMIT_FSIZE, two writers on one JSONL.

Each test injects one fault into a real run and asserts what ezpz keeps
(docs/reliability.md has the table). Faults that need a process of their
own (a file-size limit, dropped root privileges) run in a child process.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest
from _faults import SETPRIV, csv_frame, jsonl_lines, metric_steps, run_script

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux faults")


# -- read-only outdir --------------------------------------------------------------
READ_ONLY = """
    import logging, sys
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from ezpz.history import History
    out, logs = sys.argv[1], sys.argv[2]
    hist = History(outdir=out, report_dir=logs, jsonl_path=logs + "/run.jsonl", backends="csv")
    for step in range(50):
        hist.update({"train/loss": 1.0 / (step + 1)}, step=step)  # never raises
    print("UPDATES DONE", len(hist.history["train/loss"]), flush=True)
    try:
        hist.finalize(plot=False)
    except OSError as exc:
        print("FINALIZE ERROR:", type(exc).__name__, exc, flush=True)
    hist.close()
"""


def test_read_only_outdir_training_goes_on_and_the_jsonl_keeps_every_step(tmp_path):
    ro, logs = tmp_path / "ro", tmp_path / "logs"
    ro.mkdir()
    logs.mkdir()
    ro.chmod(0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:  # root ignores modes unless it drops CAP_DAC_OVERRIDE
        if SETPRIV is None:
            pytest.skip("root without setpriv cannot make a read-only directory")
        prefix = [SETPRIV, "--bounding-set=-all", "--inh-caps=-all", "--"]
    try:
        proc = run_script(tmp_path, READ_ONLY, str(ro / "out"), str(logs), prefix=prefix)
    finally:
        ro.chmod(0o755)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "UPDATES DONE 50" in text
    assert "FINALIZE ERROR: PermissionError" in text and str(ro / "out") in text, text
    assert text.count("csv backend stopped") == 1, text  # one warning, not one per step
    records, torn = jsonl_lines(logs / "run.jsonl")
    assert torn == [] and metric_steps(records) == list(range(50))
    assert not (ro / "out").exists()


# -- /dev/full for the JSONL --------------------------------------------------------
def test_dev_full_stops_only_the_jsonl(tmp_path, caplog, monkeypatch):
    from ezpz.history import History

    monkeypatch.setenv("EZPZ_TRACKER_QUEUE_SIZE", "1000000")  # no overflow drops under load
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        hist = History(outdir=out, jsonl_path="/dev/full", backends="csv")
        for step in range(30):
            hist.update({"train/loss": float(step)}, step=step)
        ds = hist.finalize(plot=False)
        hist.close()
    failures = [
        r for r in caplog.records if "JSONL" in r.getMessage() and "/dev/full" in r.getMessage()
    ]
    assert len(failures) == 1, caplog.text  # said once
    assert ds.sizes["draw"] == 30
    assert csv_frame(out / "metrics.csv")["step"].tolist() == list(range(30))
    assert (out / "report.md").is_file() and (out / "train.h5").is_file()


# -- RLIMIT_FSIZE during updates -----------------------------------------------------
FULL_DURING_UPDATES = """
    import logging, os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill (Python's default too)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from ezpz.history import History
    out = sys.argv[1]
    hist = History(outdir=out, backends="csv")
    row = {"train/loss": 0.005, "train/lr": 0.001}
    for step in range(20):
        hist.update(row, step=step)
    hist.tracker.flush(60)
    biggest = max(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out)
                  if os.path.isfile(os.path.join(out, n)))
    resource.setrlimit(resource.RLIMIT_FSIZE, (biggest + 3000, resource.RLIM_INFINITY))
    for step in range(20, 500):
        hist.update(row, step=step)  # the disk is full: training goes on
    hist.tracker.flush(60)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    ds = hist.finalize(plot=False)  # room again: the datasets hold every step
    print("DRAWS", ds.sizes["draw"], flush=True)
    hist.close()
"""


def test_full_disk_during_updates_keeps_whole_rows_and_every_step_in_memory(tmp_path):
    out = tmp_path / "out"
    proc = run_script(tmp_path, FULL_DURING_UPDATES, str(out))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "DRAWS 500" in text, text  # History and train.h5 keep every step
    assert text.count("csv backend stopped") == 1, text
    assert text.count("stopping JSONL") == 1, text
    import xarray as xr

    with xr.open_dataset(out / "train.h5") as ds:
        assert ds["step"].values.tolist() == list(range(500))
    df = csv_frame(out / "metrics.csv")  # whole rows only, none torn
    assert len(df) >= 20 and df["step"].tolist() == list(range(len(df)))
    assert (df["train/lr"] == 0.001).all() and (df["train/loss"] == 0.005).all()
    records, torn = jsonl_lines(out / "metrics.jsonl")
    steps = metric_steps(records)
    assert len(steps) >= 20 and steps == list(range(len(steps)))
    assert len(torn) <= 1  # at most the line the limit cut; readers skip it
    assert all(r["train/lr"] == 0.001 for r in records if "_event" not in r)


# -- RLIMIT_FSIZE during finalize -----------------------------------------------------
FULL_DURING_FINALIZE = """
    import logging, os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from ezpz.history import History
    out = sys.argv[1]
    hist = History(outdir=out, backends="csv")
    for step in range(3000):
        hist.update({"train/loss": float(step), "train/lr": 1e-3}, step=step)
    hist.tracker.flush(60)
    # smaller than train.h5 and the logs: every file finalize() writes hits the limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
    try:
        hist.finalize(plot=False)
        print("FINALIZE RETURNED", flush=True)
    except OSError as exc:
        print("FINALIZE ERROR:", exc, flush=True)
    import gc
    gc.collect()
    hist.close()
    print("CLEAN EXIT", flush=True)
"""


def test_full_disk_during_finalize_is_an_error_that_keeps_the_logs(tmp_path):
    out = tmp_path / "out"
    proc = run_script(tmp_path, FULL_DURING_FINALIZE, str(out))
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text  # no segfault at garbage collection
    assert "CLEAN EXIT" in text
    assert "FINALIZE ERROR: [Errno 27]" in text, text  # a clear error, File too large
    records, torn = jsonl_lines(next(p for p in out.glob("*.jsonl") if not p.is_symlink()))
    assert torn == [] and metric_steps(records) == list(range(3000))
    df = csv_frame(out / "metrics.csv")
    assert df["step"].tolist() == list(range(3000))
    assert [p.name for p in out.rglob("*") if p.name.endswith(".tmp")] == []


# -- two processes appending to one JSONL ----------------------------------------------
APPENDER = """
    import sys
    from ezpz.history import History
    path, tag, outdir = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    hist = History(outdir=outdir, jsonl_path=path, backends="none", report_enabled=False)
    for step in range(3000):
        hist.update({"who": tag, "payload": [tag] * 16}, step=step)
    hist.close()
"""


def test_two_processes_appending_to_one_jsonl_interleave_whole_lines(tmp_path):
    import subprocess

    shared = tmp_path / "shared.jsonl"
    script = tmp_path / "appender.py"
    script.write_text(__import__("textwrap").dedent(APPENDER))
    env = {**os.environ, "EZPZ_TRACK_MEMORY": "0"}
    env.pop("EZPZ_TRACKER_BACKENDS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(shared), str(tag), str(tmp_path / f"out{tag}")],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    records, torn = jsonl_lines(shared)
    assert torn == []
    metrics = [r for r in records if "_event" not in r]
    for tag in (1.0, 2.0):
        mine = [r for r in metrics if r["who"] == tag]
        assert [r["_step"] for r in mine] == list(range(3000)), tag
        assert all(np.array(r["payload"]).tolist() == [tag] * 16 for r in mine)


# -- path tricks in metric keys ------------------------------------------------------
def test_path_tricks_in_keys_never_leave_outdir(tmp_path, monkeypatch):
    from ezpz.history import History

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "a" / "b" / "out"
    hist = History(outdir=out, backends="csv")
    keys = ["../../../escape/loss", "/abs/x", "..", "a/../../../b", "train/../../up"]
    for step in range(4):
        hist.update({k: float(step) for k in keys}, step=step)
    hist.finalize()
    hist.close()
    written = [p for p in tmp_path.rglob("*") if p.is_file() or p.is_symlink()]
    assert written and all(out in p.parents for p in written), [
        str(p) for p in written if out not in p.parents
    ]
    assert list(work.iterdir()) == []
