"""Issue 12 item 12 under a real ``mpiexec -n 2``: History() or finalize() on one rank.

Before the fix, ``History()`` constructed on rank 0 only hung forever in
``Comm.Dup``/``bcast`` even with ``EZPZ_COLLECTIVE_TIMEOUT`` set. The jobs run
in a subprocess, so a regression fails through the subprocess timeout instead
of stalling the suite, and a half-finished collective never leaks into other
tests' communicators.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MPIEXEC = Path(sys.executable).with_name("mpiexec")

ONE_RANK_CONSTRUCTS = textwrap.dedent(
    """
    import os, sys, time
    from mpi4py import MPI
    from ezpz.history import History
    from ezpz.history.collective_timeout import CollectiveTimeoutError

    rank = MPI.COMM_WORLD.Get_rank()
    if rank == 1:
        time.sleep(6)  # alive, never constructs
        os._exit(0)
    t0 = time.monotonic()
    try:
        History(report_dir=sys.argv[1], backends="none")
    except CollectiveTimeoutError as exc:
        print(f"TIMEOUT after {time.monotonic() - t0:.1f}s: {exc}", flush=True)
        os._exit(3)
    print("constructed", flush=True)
    os._exit(0)
    """
)

ONE_RANK_FINALIZES = textwrap.dedent(
    """
    import logging, os, sys, time
    from mpi4py import MPI
    from ezpz.history import History

    logging.basicConfig(level=logging.WARNING)
    hist = History(report_dir=sys.argv[1], backends="none")
    hist.update({"loss": float(hist.rank)}, step=0)
    if hist.rank == 0:
        time.sleep(8)  # alive, never finalizes
        os._exit(0)
    hist.finalize(outdir=sys.argv[1] + "/out", plot=False, report=False)
    print("rank 1 finalize returned", flush=True)
    os._exit(0)
    """
)


def _run(tmp_path: Path, script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    path = tmp_path / "job.py"
    path.write_text(script)
    return subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, str(path), str(tmp_path / "hist")],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )


@pytest.mark.skipif(not MPIEXEC.exists(), reason="needs the mpich mpiexec in the venv")
def test_history_on_one_rank_raises_instead_of_hanging(tmp_path):
    proc = _run(tmp_path, ONE_RANK_CONSTRUCTS, {"EZPZ_COLLECTIVE_TIMEOUT": "1"})
    out = proc.stdout + proc.stderr
    assert "TIMEOUT after" in out, out
    assert "History() communicator (Dup)" in out, out  # names what it waited for
    assert "EZPZ_COLLECTIVE_TIMEOUT=1s" in out, out
    assert "constructed" not in out, out


@pytest.mark.skipif(not MPIEXEC.exists(), reason="needs the mpich mpiexec in the venv")
def test_finalize_on_one_rank_returns_with_a_warning(tmp_path):
    env = {"EZPZ_FINALIZE_TIMEOUT": "2", "EZPZ_COLLECTIVE_TIMEOUT": "1"}
    proc = _run(tmp_path, ONE_RANK_FINALIZES, env)
    out = proc.stdout + proc.stderr
    assert "rank 1 finalize returned" in out, out
    assert "no word from rank 0" in out, out
