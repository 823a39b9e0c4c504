"""Issue 12 items 9, 10, 11, 13, 19, 22: where and how a run's files are written.

9: every output gets the umask's mode; 10: one live History per outdir, stale
cleanup only of this run's files; 11: update() after close()/finalize() says
so; 13: finalize() on a full disk (RLIMIT_FSIZE, in a subprocess) fails
cleanly; 19: with outdir= everything lands under it; 22: a read-only outdir
fails at finalize() (documented).
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from ezpz.history import History
from ezpz.history.outdir_lock import LOCK_NAME, OutdirInUseError, OutdirLock

ROOT = Path(__file__).resolve().parent.parent


def _log(hist: History, steps: int = 20) -> None:
    for i in range(steps):
        hist.update({"train/loss": 1.0 / (i + 1), "train/lr": 1e-3}, step=i)
        if i % 5 == 0:
            hist.update({"eval/acc": 0.1 * i}, step=i)


@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


# -- item 9: modes -----------------------------------------------------------------


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664)])
def test_every_output_file_gets_the_umask_mode(tmp_path, umask, mask, mode):
    """Before: train.h5, eval.h5 and metrics.jsonl were 0600 whatever the umask."""
    umask(mask)
    out = tmp_path / "out"
    hist = History(outdir=out, backends="csv", config={"lr": 1e-3})
    _log(hist)
    hist.finalize()
    hist.close()
    files = [p for p in out.rglob("*") if p.is_file() and not p.is_symlink()]
    names = {p.name for p in files}
    assert {"train.h5", "eval.h5", "metrics.jsonl", "report.md"} <= names
    wrong = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    wrong = {k: v for k, v in wrong.items() if v != oct(mode)}
    assert wrong == {}


# -- item 10: two Histories, one outdir -------------------------------------------------


def test_second_history_on_a_live_outdir_is_refused_naming_it(tmp_path):
    """Before: metrics.csv was mangled and the second finalize deleted the first's train.h5."""
    out = tmp_path / "shared"
    first = History(outdir=out, backends="csv")
    with pytest.raises(OutdirInUseError, match=str(out)) as info:
        History(outdir=out, backends="csv")
    assert first.run_id in str(info.value)
    _log(first)
    first.finalize(plot=False)
    first.close()
    assert (out / "train.h5").is_file()
    # once the first run is done, the directory is free again
    second = History(outdir=out, backends="none")
    second.close()


def test_lock_is_released_by_finalize_close_and_exit(tmp_path):
    out = tmp_path / "o"
    hist = History(outdir=out, backends="none")
    assert (out / LOCK_NAME).is_file()
    hist.update({"x": 1.0})
    hist.finalize(plot=False, report=False)
    assert not (out / LOCK_NAME).exists()
    hist.close()
    with History(outdir=out, backends="none"):
        assert (out / LOCK_NAME).is_file()
    assert not (out / LOCK_NAME).exists()
    # a process that exits without close() or finalize() leaves no lock behind
    code = (
        "import sys; from ezpz.history import History; History(outdir=sys.argv[1], backends='none')"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, timeout=120)
    assert not (out / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "o"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ezpz.history.outdir_lock import OutdirLock;"
            "OutdirLock(sys.argv[1], 'dead-run').acquire()",
            str(out),
        ],
        check=True,
    )
    assert proc.returncode == 0 and (out / LOCK_NAME).is_file()  # left behind
    with caplog.at_level(logging.WARNING):
        lock = OutdirLock(out, "new-run").acquire()
    assert "stale lock" in caplog.text and "dead-run" in caplog.text
    lock.release()
    assert not (out / LOCK_NAME).exists()


def test_lock_held_on_another_host_is_refused(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / LOCK_NAME).write_text('{"run_id": "r1", "host": "elsewhere", "pid": 1}')
    with pytest.raises(OutdirInUseError, match="elsewhere"):
        OutdirLock(out, "r2").acquire()
    # the same run (a resumed job) takes its own lock over
    OutdirLock(out, "r1").acquire().release()


def test_stale_cleanup_touches_only_files_of_this_run(tmp_path, caplog):
    """Before: any ezpz .h5 not written by this finalize was deleted, whoever wrote it."""
    out = tmp_path / "o"
    first = History(outdir=out, backends="none")
    _log(first)
    first.finalize(plot=False, report=False)
    first.close()
    second = History(outdir=out, backends="none")
    second.update({"train/loss": 1.0}, step=0)  # no eval group this time
    with caplog.at_level(logging.WARNING):
        second.finalize(plot=False, report=False)
    with h5py.File(out / "eval.h5", "r") as f:  # the first run's file is kept...
        assert f.attrs["run_id"] == first.run_id
    assert "eval.h5" in caplog.text and first.run_id in caplog.text  # ...and named
    # a stale file of this same run (e.g. a group a resumed run no longer has) goes
    with h5py.File(out / "old.h5", "w") as f:
        f.attrs["ezpz_version"] = "0"
        f.attrs["run_id"] = second.run_id
    second.finalize(plot=False, report=False)
    assert not (out / "old.h5").exists() and (out / "eval.h5").exists()
    second.close()


# -- item 11: update() after close() / finalize() ----------------------------------------


def test_update_after_close_warns_once_and_records_nothing(tmp_path, caplog):
    """Before: returned normally and recorded nothing, silently."""
    hist = History(outdir=tmp_path / "o", backends="none")
    hist.update({"x": 1.0}, step=0)
    hist.close()
    with caplog.at_level(logging.WARNING):
        for step in range(1, 4):
            hist.update({"x": 2.0}, step=step)
    assert caplog.text.count("after close()") == 1
    assert hist.history["x"].tolist() == [1.0]


def test_update_after_finalize_warns_once_and_keeps_recording(tmp_path, caplog):
    """Before: the backends dropped it silently."""
    hist = History(outdir=tmp_path / "o", backends="none")
    hist.update({"x": 1.0}, step=0)
    hist.finalize(plot=False, report=False)
    with caplog.at_level(logging.WARNING):
        for step in range(1, 4):
            hist.update({"x": 2.0}, step=step)
    assert caplog.text.count("after finalize()") == 1
    assert hist.history["x"].tolist() == [1.0, 2.0, 2.0, 2.0]
    hist.close()


# -- item 13: a full disk at finalize() --------------------------------------------------

FULL_DISK = textwrap.dedent(
    """
    import os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    from ezpz.history import History
    out = sys.argv[1]
    hist = History(outdir=out, backends="none")
    for i in range(20000):
        hist.update({"train/loss": float(i), "train/lr": 1e-3, "eval/x": 1.0}, step=i)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
    try:
        hist.finalize(plot=False)
    except OSError as exc:
        print("ERROR:", exc, flush=True)
    import gc
    gc.collect()
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    # the run's own JSONL stays open until close(); no HDF5 file or temp file may
    print("OPEN:", [p for p in fds if p.startswith(out) and not p.endswith(".jsonl")])
    hist.close()
    print("CLEAN EXIT", flush=True)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and /proc")
def test_finalize_on_a_full_disk_is_a_clear_error_not_a_crash(tmp_path):
    """Before: an HDF5 error, then a segfault in h5netcdf's close() at garbage collection."""
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(script), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text  # -11 (SIGSEGV) before the fix
    assert "ERROR: [Errno 27] ezpz: cannot write train.h5 in" in text, text
    assert "File too large" in text
    assert "OPEN: []" in text and "CLEAN EXIT" in text
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


# -- item 19: everything under outdir ------------------------------------------------------


def test_with_outdir_nothing_is_written_to_the_working_directory(tmp_path, monkeypatch):
    """Before: the JSONL went to ./outputs/history/ (outdir got a copy and a symlink)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    hist = History(outdir=out, backends="csv")
    assert hist.jsonl_path.parent == out
    _log(hist)
    hist.finalize()
    hist.close()
    assert list(cwd.iterdir()) == []
    assert (out / "metrics.jsonl").is_file() and (out / "train.h5").is_file()


def test_mlflow_without_tracking_uri_stores_under_outdir(tmp_path, monkeypatch, caplog):
    """Before: MLflow wrote ./mlflow.db (./mlruns) in the working directory."""
    pytest.importorskip("mlflow")
    from ezpz.tracker.mlflow_backend import MlflowBackend, local_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        backend = MlflowBackend(
            project_name="hardening", outdir=str(out), rank=0, world_size=1, system_metrics=False
        )
    uri, artifacts = local_store(out)
    assert backend.tracking_uri == uri == f"sqlite:///{out.resolve()}/mlflow.db"
    assert "runs are stored in" in caplog.text
    assert backend.start()
    backend.log({"loss": 1.0}, step=0)
    backend.finish()
    assert (out / "mlflow.db").is_file()
    assert list(cwd.iterdir()) == []
    assert artifacts.startswith(str(out.resolve()))


def test_read_only_outdir_fails_at_finalize_as_documented(tmp_path):
    doc = (ROOT / "docs" / "history.md").read_text()
    assert "read-only" in doc
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    out = tmp_path / "ro"
    out.mkdir()
    hist = History(report_dir=tmp_path / "r", backends="none")  # JSONL elsewhere
    hist.update({"x": 1.0})
    out.chmod(0o555)
    try:
        with pytest.raises(OSError):
            hist.finalize(outdir=out, plot=False)
    finally:
        out.chmod(0o755)
        hist.close()
    assert np.isfinite(hist.history["x"]).all()
