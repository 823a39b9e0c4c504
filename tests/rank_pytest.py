"""Run pytest on one MPI rank: ``rank_pytest.py PREFIX [pytest args...]``.

Rank 0 prints to the console; other ranks write ``PREFIX-rankN.log`` so the
ranks' summaries don't interleave. Every rank writes ``PREFIX-rankN.xml``.
Runs through ``python -m mpi4py`` semantics: a failing rank aborts the job
instead of leaving the others hanging in a collective.
"""

from __future__ import annotations

import os
import sys

_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def main() -> None:
    prefix, *args = sys.argv[1:]
    rank = next((os.environ[v] for v in _RANK_VARS if v in os.environ), "0")
    if rank != "0":
        fd = os.open(f"{prefix}-rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    from mpi4py.run import main as mpi4py_main

    # A private base temp dir per rank: ranks sharing one would race in cleanup.
    basetemp = f"{prefix}-rank{rank}-tmp"
    sys.argv = [
        "mpi4py",
        "-m",
        "pytest",
        *args,
        f"--junitxml={prefix}-rank{rank}.xml",
        f"--basetemp={basetemp}",
    ]
    mpi4py_main()


if __name__ == "__main__":
    main()
