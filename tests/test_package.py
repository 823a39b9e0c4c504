"""Packaging promises: light import, public names, rank helpers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ezpz

HEAVY = ["torch", "matplotlib", "xarray", "h5py", "wandb", "mlflow", "mpi4py", "pandas"]


def test_import_ezpz_and_history_class_stays_light():
    code = (
        f"import sys, ezpz; ezpz.History; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_single_process_update_imports_nothing_heavy(tmp_path):
    code = (
        "import sys, ezpz;"
        f"h = ezpz.History(report_dir={str(tmp_path)!r}, backends='none');"
        "h.update({'loss': 1.0}); h.close();"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "name",
    [
        "History",
        "StopWatch",
        "get_rank",
        "get_world_size",
        "get_local_rank",
        "setup_torch",
        "get_memory_metrics",
        "setup_wandb",
        "setup_mlflow",
        "format_compact_summary",
    ],
)
def test_public_names_resolve(name):
    assert callable(getattr(ezpz, name))


def test_unknown_attribute_is_attribute_error():
    with pytest.raises(AttributeError):
        ezpz.no_such_thing  # noqa: B018


@pytest.mark.parametrize(
    ("env", "rank", "size", "local"),
    [
        ({"PMI_RANK": "3", "PMI_SIZE": "1", "MPI_LOCALRANKID": "1"}, 3, 1, 1),
        (
            {
                "OMPI_COMM_WORLD_RANK": "2",
                "OMPI_COMM_WORLD_SIZE": "1",
                "OMPI_COMM_WORLD_LOCAL_RANK": "0",
            },
            2,
            1,
            0,
        ),
        ({"SLURM_PROCID": "5", "SLURM_NTASKS": "1", "SLURM_LOCALID": "2"}, 5, 1, 2),
        ({"RANK": "1", "WORLD_SIZE": "1", "LOCAL_RANK": "1"}, 1, 1, 1),
        ({}, 0, 1, 0),
    ],
)
def test_rank_from_launcher_variables(monkeypatch, env, rank, size, local):
    from ezpz import dist

    for var in (*dist._RANK_VARS, *dist._SIZE_VARS, *dist._LOCAL_RANK_VARS):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    assert (dist.get_rank(), dist.get_world_size(), dist.get_local_rank()) == (rank, size, local)


def test_all_lists_exactly_the_lazy_public_names():
    assert set(ezpz.__all__) == set(ezpz._LAZY) | {"__version__"}
