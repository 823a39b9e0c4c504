"""``ezpz-history`` conventions: global options on either side, --help with examples, exit codes."""

from __future__ import annotations

import subprocess

import pytest
from cli_runs import CLI, RUN_A, write_run_a  # noqa: I001

COMMANDS = ("report", "watch", "compare", "sync")


def _cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=240, **kw)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command):
    proc = _cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "examples:" in proc.stdout and f"ezpz-history {command}" in proc.stdout
    assert "--quiet" in proc.stdout and "--report-dir" in proc.stdout


def test_top_level_help_lists_commands():
    proc = _cli("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout
    assert "Exit status: 0 ok, 1 failure, 2 usage error" in proc.stdout


def test_quiet_after_the_command(tmp_path):
    """``ezpz-history report -q RUN`` used to fail with 'unrecognized arguments: -q'."""
    path = write_run_a(tmp_path)
    out = tmp_path / "out"
    proc = _cli("report", "-q", str(path), "--outdir", str(out), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and (out / "report.md").exists()
    loud = _cli("report", str(path), "--outdir", str(tmp_path / "out2"), "--no-plots")
    assert loud.returncode == 0 and "wrote" in loud.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("--report-dir", "{dir}", "watch", RUN_A, "--once", "--no-plots"),
        ("watch", RUN_A, "--once", "--no-plots", "--report-dir", "{dir}"),
        ("-q", "watch", "--report-dir", "{dir}", RUN_A, "--once", "--no-plots"),
        ("watch", RUN_A, "-q", "--once", "--no-plots", "--report-dir", "{dir}"),
    ],
)
def test_global_options_on_either_side(tmp_path, args):
    write_run_a(tmp_path)
    proc = _cli(*[a.format(dir=tmp_path) for a in args])
    assert proc.returncode == 0, proc.stderr
    assert f"run {RUN_A}" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("nosuch",),
        ("watch",),
        ("watch", "x", "--interval", "0"),
        ("compare",),
        ("sync", "x"),
        ("sync", "x", "--backends", "nosuch"),
        ("report", "x.jsonl", "--outdir", "o", "--bogus"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args):
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, (args, proc.stderr)
    assert "ezpz-history" in proc.stderr and "error" in proc.stderr
    assert "Traceback" not in proc.stderr
