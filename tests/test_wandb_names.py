"""W&B project / MLflow experiment resolution (docs/backends.md, "Project name" / "Experiment name") and the system info."""

from __future__ import annotations

import sys

import pytest

from ezpz.tracker import sysinfo
from ezpz.tracker.project_name import (
    INTERACTIVE_NAME,
    mlflow_experiment,
    script_derived_name,
    wandb_project,
)

ALL = {
    "WB_PROJECT": "wb",
    "WANDB_PROJECT": "wandb",
    "WB_PROJECT_NAME": "wbname",
    "MLFLOW_EXPERIMENT_NAME": "mlf",
}


def _without(*names):
    return {k: v for k, v in ALL.items() if k not in names}


def test_wandb_project_order():
    assert wandb_project("arg", ALL) == "arg"
    assert wandb_project(None, ALL) == "wb"
    assert wandb_project(None, _without("WB_PROJECT")) == "wandb"
    assert wandb_project(None, _without("WB_PROJECT", "WANDB_PROJECT")) == "wbname"
    # MLFLOW_EXPERIMENT_NAME never names a W&B project.
    assert wandb_project(None, {"MLFLOW_EXPERIMENT_NAME": "mlf"}) == script_derived_name()
    assert wandb_project("", {"WB_PROJECT": "  "}) == script_derived_name()


def test_mlflow_experiment_order():
    assert mlflow_experiment("arg", ALL) == "arg"
    assert mlflow_experiment(None, ALL) == "mlf"
    assert mlflow_experiment(None, _without("MLFLOW_EXPERIMENT_NAME")) == "wb"
    assert mlflow_experiment(None, {"WANDB_PROJECT": "wandb", "WB_PROJECT_NAME": "x"}) == "wandb"
    assert mlflow_experiment(None, {"WB_PROJECT_NAME": "x"}) == "x"
    assert mlflow_experiment(None, {}) == script_derived_name()


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("/home/u/ezpz/examples/vit.py", "ezpz.examples.vit"),
        ("/home/u/proj/train.py", "ezpz.proj.train"),
        ("train.py", "ezpz.train"),
        ("/site-packages/mypkg/__main__.py", "ezpz.site-packages.mypkg"),
        ("/x/ezpz/train.py", "ezpz.train"),
        ("-c", INTERACTIVE_NAME),
        ("", INTERACTIVE_NAME),
    ],
)
def test_script_derived_name(argv0, expected):
    assert script_derived_name(argv0) == expected


def test_wandb_project_drops_characters_wandb_rejects():
    assert wandb_project("a/b:c#d?e%f\\g", {}) == "a-b-c-d-e-f-g"
    assert len(wandb_project("p" * 300, {})) == 128


def test_system_info_fields(monkeypatch, tmp_path):
    hostfile = tmp_path / "nodes"
    hostfile.write_text("x1000c0s0b0n0\nx1000c0s0b0n0\nx1000c0s1b0n0\n")
    monkeypatch.setenv("PBS_JOBID", "12345.pbs01")
    monkeypatch.setenv("PBS_NODEFILE", str(hostfile))
    monkeypatch.setenv("AMSC_API_KEY", "never-in-sysinfo")
    info = sysinfo.system_info(world_size=24, rank=0)
    assert info["world_size"] == 24 and info["rank"] == 0
    assert info["scheduler"] == "pbs" and info["job_id"] == "12345.pbs01"
    assert info["hostfile"] == str(hostfile) and info["num_nodes"] == 2
    assert info["hostname"] and info["python_version"] and info["ezpz_version"]
    assert "never-in-sysinfo" not in repr(info)


def test_slurm_job_without_hostfile(monkeypatch):
    for name in ("PBS_JOBID", "PBS_NODEFILE", "HOSTFILE", "COBALT_NODEFILE", "COBALT_JOBID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "987")
    monkeypatch.setenv("SLURM_NNODES", "4")
    info = sysinfo.job_info()
    assert info == {"scheduler": "slurm", "job_id": "987", "num_nodes": 4}


def test_torch_version_without_importing_torch(monkeypatch):
    pytest.importorskip("torch")  # installed, so metadata has a version
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    version = sysinfo.package_version("torch")
    assert version and version[0].isdigit()
    assert "torch" not in sys.modules
    assert sysinfo.package_version("surely-not-installed-pkg") is None
