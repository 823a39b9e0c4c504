"""Hang protection under a real ``mpiexec -n 2``: a rank that skips a step.

The job runs in a subprocess so that a regression (a hang) fails this test
through its timeout instead of stalling the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MPIEXEC = Path(sys.executable).with_name("mpiexec")

SCRIPT = textwrap.dedent(
    """
    import os, time
    import numpy as np
    from mpi4py import MPI
    from ezpz.history.collective_timeout import CollectiveTimeoutError
    from ezpz.history.reduce import Reducer

    comm = MPI.COMM_WORLD.Dup()
    rank = comm.Get_rank()
    reducer = Reducer(comm)  # timeout from EZPZ_COLLECTIVE_TIMEOUT
    assert reducer.timeout == 0.5, reducer.timeout
    for step in range(3):
        if rank == 1 and step == 2:
            print("rank 1 skips step 2", flush=True)
            time.sleep(4)  # alive but absent, like a stuck data loader
            os._exit(0)  # no MPI_Finalize: it would wait for the rank that is gone
        t0 = time.monotonic()
        try:
            reducer.reduce(("loss",), np.array([float(rank)]), step)
        except CollectiveTimeoutError as exc:
            print(f"TIMEOUT after {time.monotonic() - t0:.2f}s: {exc}", flush=True)
            os._exit(3)  # the job cannot go on; Abort would also do
    print(f"rank {rank} finished", flush=True)
    """
)


@pytest.mark.skipif(not MPIEXEC.exists(), reason="needs the mpich mpiexec in the venv")
def test_missing_rank_raises_naming_the_step(tmp_path):
    script = tmp_path / "skip_step.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, EZPZ_COLLECTIVE_TIMEOUT="0.5")
    proc = subprocess.run(
        [str(MPIEXEC), "-n", "2", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "TIMEOUT after" in out, out
    assert "statistics for step 2" in out, out
    assert "EZPZ_COLLECTIVE_TIMEOUT" in out, out
    assert "rank 0 finished" not in out, out
