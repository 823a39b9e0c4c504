"""PBS and Slurm job scripts: syntax, shellcheck, the launch line they build,
and one real launch of the PBS script with this machine's mpiexec."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "jobscripts" / "pbs.sh", ROOT / "jobscripts" / "slurm.sh"]
SCHEDULER_VARS = ("PBS_NODEFILE", "PBS_JOBID", "PBS_O_WORKDIR", "SLURM_JOB_ID", "PPN", "OUTDIR")


def run_script(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SCHEDULER_VARS}
    clean.update(env)
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=clean, timeout=240
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_clean(script):
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_pbs_launch_line(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x3101c0s13b0n0\nx3101c0s13b1n0\nx3101c0s19b0n0\n")
    out = run_script(
        SCRIPTS[0], "--steps", "7", EZPZ_DRY_RUN="1", PBS_NODEFILE=str(nodefile),
        PPN="4", PBS_JOBID="123.polaris", DEPTH="16", EZPZ_TRACKER_BACKENDS="csv",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("mpiexec -n 12 --ppn 4 --hostfile " + str(nodefile))
    assert "--cpu-bind depth --depth=16" in line
    assert "-m ezpz.examples.train --outdir outputs/train/123.polaris --steps 7" in line
    assert "3 node(s) x 4 rank(s) = 12 ranks; backends=csv" in out.stdout


def test_slurm_launch_line():
    out = run_script(
        SCRIPTS[1], "--steps", "5", EZPZ_DRY_RUN="1", SLURM_JOB_ID="99",
        SLURM_JOB_NUM_NODES="2", SLURM_NTASKS_PER_NODE="4(x2)", SRUN_ARGS="--mpi=pmix",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("srun --ntasks=8 --ntasks-per-node=4 --cpu-bind=cores --mpi=pmix")
    assert "--outdir outputs/train/99 --steps 5" in line
    assert "backends=csv,wandb" in out.stdout  # the default, wandb offline


@pytest.mark.parametrize(("script", "needs"), [(SCRIPTS[0], "PBS_NODEFILE"), (SCRIPTS[1], "SLURM")])
def test_outside_a_job_is_a_clear_error(script, needs):
    out = run_script(script)
    assert out.returncode == 2
    assert needs in out.stderr


def test_pbs_script_really_runs_the_example(tmp_path):
    """Launch the PBS script with this machine's mpiexec (Hydra takes the same
    -n/--ppn/--hostfile flags as PALS; the PALS-only binding flags are off)."""
    bindir = Path(sys.executable).parent
    mpiexec = bindir / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("no mpiexec beside this python (install the mpich wheel)")
    pytest.importorskip("torch", reason="the example trains a torch model")
    nodefile = tmp_path / "nodes"
    nodefile.write_text("localhost\n")
    out = run_script(
        SCRIPTS[0], "--steps", "3", "--eval-every", "3", "--batch-size", "8", "--hidden", "8",
        "--depth", "1", "--eval-size", "16",
        PBS_NODEFILE=str(nodefile), PBS_O_WORKDIR=str(tmp_path), PBS_JOBID="42.local",
        PPN="2", CPU_BIND="", MPIEXEC=str(mpiexec), PYTHON=sys.executable,
        EZPZ_TRACKER_BACKENDS="csv",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "outputs" / "train" / "42.local"
    for name in ("train.h5", "eval.h5", "metrics.csv", "report.md"):
        assert (run / name).is_file(), name
