"""setup_torch / get_torch_device / cleanup in a single process (no launcher).

Each case runs in a fresh interpreter so no process group leaks into the
other tests of this session. The multi-rank cases are in
tests/mpi/test_setup_torch.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch", reason="setup_torch needs torch")

LAUNCHER_VARS = [
    "PMI_RANK",
    "PMI_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "PALS_LOCAL_RANKID",
    "SLURM_LOCALID",
    "EZPZ_TORCH_BACKEND",
]


def run_python(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    clean.update(env)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=clean,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_single_process_gets_a_gloo_world_of_one():
    got = run_python(
        """
        import json, torch, torch.distributed as dist, ezpz
        rank = ezpz.setup_torch(seed=3)
        t = torch.tensor([2.0])
        dist.all_reduce(t)
        first = torch.rand(1).item()
        res = dict(rank=rank, size=dist.get_world_size(), backend=dist.get_backend(),
                   reduced=t.item(), device=str(ezpz.get_torch_device()),
                   device_str=ezpz.get_torch_device(as_string=True),
                   again=ezpz.setup_torch(), env=[os.environ[k] for k in
                   ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")])
        ezpz.cleanup()
        res["after_cleanup"] = dist.is_initialized()
        ezpz.cleanup()  # a second cleanup is a no-op
        torch.manual_seed(3)
        res["seeded"] = torch.rand(1).item() == first
        print(json.dumps(res))
        """.replace("import json,", "import os, json,"),
    )
    assert got["rank"] == 0 and got["size"] == 1 and got["again"] == 0
    assert got["backend"] == "gloo" and got["reduced"] == 2.0
    assert got["device"] == "cpu" and got["device_str"] == "cpu"
    assert got["env"] == ["0", "1", "0", "127.0.0.1"]
    assert got["after_cleanup"] is False
    assert got["seeded"] is True  # seed + rank 0 == torch.manual_seed(3)


def test_backend_argument_and_env_override():
    code = """
        import json, torch.distributed as dist, ezpz
        ezpz.setup_torch(backend=BACKEND)
        print(json.dumps(dict(backend=dist.get_backend())))
        ezpz.cleanup()
        """
    assert run_python(code.replace("BACKEND", "'gloo'"))["backend"] == "gloo"
    # the env var is read: a backend torch does not know reaches init_process_group
    failing = """
        import json, ezpz
        try:
            ezpz.setup_torch()
        except Exception as exc:
            print(json.dumps(dict(error=str(exc))))
        """
    got = run_python(failing, EZPZ_TORCH_BACKEND="nosuchbackend")
    assert "nosuchbackend" in got["error"].lower()


def test_several_ranks_without_mpi_or_master_addr_is_a_clear_error():
    code = """
        import json, sys
        sys.modules["mpi4py"] = None  # mpi4py not importable
        import ezpz
        try:
            ezpz.setup_torch()
        except RuntimeError as exc:
            print(json.dumps(dict(error=str(exc))))
        """
    got = run_python(code, PMI_SIZE="2", PMI_RANK="1")
    assert "MASTER_ADDR" in got["error"] and "2 ranks" in got["error"]


def test_torchrun_style_environment_without_mpi():
    # torchrun exports RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; a world of one
    # lets us run it in one process.
    code = """
        import json, sys
        sys.modules["mpi4py"] = None
        import torch.distributed as dist, ezpz
        rank = ezpz.setup_torch()
        print(json.dumps(dict(rank=rank, size=dist.get_world_size())))
        ezpz.cleanup()
        """
    got = run_python(code, RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="0")
    assert got == {"rank": 0, "size": 1}


def test_import_ezpz_dist_does_not_import_torch():
    code = """
        import json, sys, ezpz, ezpz.dist, ezpz.flops, ezpz.memory
        print(json.dumps(dict(torch="torch" in sys.modules)))
        """
    assert run_python(code) == {"torch": False}
