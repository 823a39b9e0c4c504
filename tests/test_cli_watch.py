"""``ezpz-history watch``: golden frame, torn lines, rotation, bounded reads, live tmux redraw."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runs import CLI, RUN_A, T0, row_a, write_run_a  # noqa: I001

from ezpz.runs.locate import resolve_run
from ezpz.runs.tail import TailReader
from ezpz.runs.watch import WatchOptions, render_frame

GOLDEN = Path(__file__).parent / "data" / "watch_once.txt"


def _mask(frame: str) -> str:
    frame = re.sub(r"last line [0-9.]+ (s|min|h|d) ago", "last line <AGO> ago", frame)
    return re.sub(r"^/.*\.jsonl$", "<JSONL>", frame, flags=re.MULTILINE)


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, **kw)


def test_once_golden_frame(tmp_path):
    path = write_run_a(tmp_path)
    proc = _cli("watch", str(path), "--once", "--width", "72", "--metrics", "loss,eval/acc")
    assert proc.returncode == 0, proc.stderr
    frame = _mask(proc.stdout)
    if os.environ.get("EZPZ_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(frame)
    assert frame == GOLDEN.read_text()


def test_once_frame_content(tmp_path):
    path = write_run_a(tmp_path)
    frame = _cli("watch", str(path), "--once", "--no-plots", "--width", "100").stdout
    head = frame.splitlines()
    assert head[0] == f"run {RUN_A} (baseline) · world size 4 · finished"
    assert head[1].startswith("step 99 · 2.0 steps/s · last line ")
    # console-summary style: the mean across ranks (± std), hyperparameters bare
    mean = (2.0 / 100 + 0.01 * (99 % 3)) * 1.01
    assert f"loss={mean:.4f}(± 0.024)" in frame
    assert "lr=0.0010" in frame and "eval  acc=0.9000" in frame
    assert "train/chains" not in frame and "loss/mean" not in frame


def test_state_from_events(tmp_path):
    path = write_run_a(tmp_path, finalized=False)
    info = resolve_run(path)
    reader = TailReader(path, keep=50)
    reader.poll()
    assert "· finished" not in render_frame(info, reader, WatchOptions(plots=False))
    with path.open("a") as fh:
        fh.write(
            json.dumps({"_event": "interrupted", "_time": T0 + 60, "signal": "SIGTERM"}) + "\n"
        )
    assert reader.poll()
    assert (
        render_frame(info, reader, WatchOptions(plots=False))
        .splitlines()[0]
        .endswith("· interrupted")
    )


def test_torn_last_line_is_left_for_later(tmp_path):
    path = write_run_a(tmp_path, finalized=False)
    with path.open("a") as fh:
        fh.write('{"_step": 100, "_time": 1.0, "train/lo')  # a write in progress
    reader = TailReader(path, keep=10)
    reader.poll()
    assert reader.rows[-1]["_step"] == 99 and reader.skipped == 0
    with path.open("a") as fh:  # the rest of that line arrives
        fh.write('ss": 0.5}\n')
    assert reader.poll()
    assert reader.rows[-1] == {"_step": 100, "_time": 1.0, "train/loss": 0.5}
    proc = _cli("watch", str(path), "--once", "--no-plots")
    assert proc.returncode == 0 and "step 100" in proc.stdout


def test_replaced_and_truncated_file(tmp_path):
    path = write_run_a(tmp_path, steps=30, finalized=False)
    reader = TailReader(path, keep=100)
    reader.poll()
    assert reader.rows[-1]["_step"] == 29
    new = tmp_path / "new.jsonl"  # rotation: a new file renamed over the old one
    new.write_text(json.dumps(row_a(500)) + "\n")
    os.replace(new, path)
    assert reader.poll() and reader.resets == 1
    assert [r["_step"] for r in reader.rows] == [500]
    path.write_text(json.dumps(row_a(7)) + "\n")  # truncated in place
    assert reader.poll()
    assert [r["_step"] for r in reader.rows] == [7]


def test_bytes_read_per_frame_are_bounded_on_a_1gb_file(tmp_path):
    """A 1 GB JSONL: the first frame reads the head and a tail window, later frames the new bytes."""
    path = tmp_path / "big.jsonl"
    block = "".join(json.dumps(row_a(i)) + "\n" for i in range(2000)).encode()
    with path.open("wb") as fh:
        fh.write(
            json.dumps({"_event": "start", "_time": T0, "run_id": "big", "world_size": 8}).encode()
            + b"\n"
        )
        written = 0
        while written < 1 << 30:
            fh.write(block)
            written += len(block)
        fh.write(b"".join(json.dumps(row_a(10**6 + i)).encode() + b"\n" for i in range(5)))
    size = path.stat().st_size
    assert size >= 1 << 30
    keep = 500
    reader = TailReader(path, keep=keep)
    reader.poll()
    line = len(json.dumps(row_a(10**6))) + 1
    bound = 2 * (keep + 2) * line + reader.block + (1 << 16)
    assert reader.last_read_bytes <= bound, (reader.last_read_bytes, bound)
    assert reader.rows[-1]["_step"] == 10**6 + 4 and len(reader.rows) == keep
    assert reader.events[0]["world_size"] == 8
    with path.open("ab") as fh:
        fh.write(json.dumps(row_a(2 * 10**6)).encode() + b"\n")
    reader.poll()
    assert 0 < reader.last_read_bytes < 2 * line
    assert reader.rows[-1]["_step"] == 2 * 10**6
    assert not reader.poll() and reader.last_read_bytes == 0
    path.unlink()


def test_bad_input(tmp_path):
    missing = _cli("watch", str(tmp_path / "missing.jsonl"), "--once")
    assert missing.returncode == 2 and "no run" in missing.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = _cli("watch", str(empty), "--once")
    assert proc.returncode == 1 and "empty" in proc.stderr
    foreign = tmp_path / "other.jsonl"
    foreign.write_text('{"name": "a", "value": 1}\n{"name": "b", "value": 2}\n')
    proc = _cli("watch", str(foreign), "--once")
    assert proc.returncode == 1 and "not an ezpz JSONL" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_id_and_report_dir_forms(tmp_path):
    write_run_a(tmp_path / "hist")
    by_id = _cli("watch", RUN_A, "--once", "--no-plots", "--report-dir", str(tmp_path / "hist"))
    assert by_id.returncode == 0, by_id.stderr
    by_prefix = _cli("--report-dir", str(tmp_path / "hist"), "watch", RUN_A[:12], "--once")
    assert by_prefix.returncode == 0 and RUN_A in by_prefix.stdout
    by_dir = _cli("watch", str(tmp_path / "hist"), "--once", "--no-plots")
    assert by_dir.returncode == 0 and RUN_A in by_dir.stdout


WRITER = """
import sys, time
from ezpz.history import History
hist = History(report_dir=sys.argv[1], backends="none")
print(hist.jsonl_path, flush=True)
i = 0
while True:
    hist.update({"train/loss": 1.0 / (i + 1), "lr": 0.1}, step=i)
    i += 1
    time.sleep(0.05)
"""


def _shown_step(text: str) -> int | None:
    found = re.findall(r"^step (\d+) ·", text, flags=re.MULTILINE)
    return int(found[-1]) if found else None


@pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"
)
def test_live_redraw_in_tmux(tmp_path):
    """A person's view: watch in a tmux pane while a job writes; the pane advances."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    session = f"ezpz-watch-{os.getpid()}"
    socket = ["-L", session]
    try:
        jsonl = writer.stdout.readline().strip()
        assert jsonl
        # The shell prints the exit status after Ctrl-C, then keeps the pane open.
        env_cmd = f"{CLI} watch {jsonl} --interval 0.5 --metrics loss; echo EXIT=$?; sleep 60"
        subprocess.run(
            ["tmux", *socket, "new-session", "-d", "-s", session, "-x", "100", "-y", "40", env_cmd],
            check=True,
            timeout=30,
        )

        def capture() -> str:
            return subprocess.run(
                ["tmux", *socket, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout

        first = second = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first is None:
            first = _shown_step(capture())
            time.sleep(0.5)
        assert first is not None, capture()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            second = _shown_step(capture())
            if second is not None and second > first:
                break
        assert second is not None and second > first, capture()
        assert "train/loss" in capture()  # the plot is drawn
        # Ctrl-C ends it cleanly: exit status 0, no traceback.
        subprocess.run(["tmux", *socket, "send-keys", "-t", session, "C-c"], timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "EXIT=" not in capture():
            time.sleep(0.3)
        text = capture()
        assert "EXIT=0" in text and "Traceback" not in text, text
    finally:
        subprocess.run(["tmux", *socket, "kill-server"], capture_output=True, timeout=30)
        writer.kill()
        writer.wait(timeout=30)


def test_locate_outdir_forms(tmp_path):
    live = write_run_a(tmp_path)
    outdir = tmp_path / RUN_A
    outdir.mkdir()
    (outdir / "metrics.jsonl").write_bytes(live.read_bytes())
    info = resolve_run(outdir)  # the live JSONL beside the outdir wins
    assert info.jsonl == live and info.outdir == outdir and info.run_id == RUN_A
    live.unlink()
    info = resolve_run(outdir)  # else finalize's copy
    assert info.jsonl == outdir / "metrics.jsonl" and info.run_id == RUN_A
    assert info.run_name == "baseline"
