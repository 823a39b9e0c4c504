"""Shared test set-up: keep tests off the network and out of the user's files."""

from __future__ import annotations

import os

import pytest

# Backends must never reach the internet from the test suite.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests choose backends explicitly; an exported selection must not leak in.
os.environ.pop("EZPZ_TRACKER_BACKENDS", None)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real ``mlflow server`` (tests/mlflow_server.py) shared by the test session.

    Start-up costs 5-30 s on a loaded 2-core machine, so every module that only
    needs *a* server uses this one; each keeps to its own experiment names.
    Under pytest-xdist the tests that use it run on one worker (see
    ``pytest_collection_modifyitems``), so it starts once.
    """
    pytest.importorskip("mlflow", reason="mlflow is an optional dependency")
    from mlflow_server import MlflowServer

    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch):
    """wandb offline, writing under ``tmp_path``, with no project variable set."""
    wandb = pytest.importorskip("wandb", reason="wandb is an optional dependency")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    for name in ("WB_PROJECT", "WANDB_PROJECT", "WB_PROJECT_NAME"):
        monkeypatch.delenv(name, raising=False)
    # wandb reads its settings (WANDB_DIR, WANDB_MODE) once per process: reset them.
    wandb.teardown()
    yield tmp_path
    wandb.teardown()


def pytest_configure(config):
    # CI runs explore the same hypothesis examples every time: a red CI is then
    # reproducible; local runs keep exploring new examples.
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    """Keep tests that share an expensive fixture on one pytest-xdist worker.

    ``make test`` runs the serial suite with ``--dist loadgroup``: tests that
    use the session's ``mlflow_server`` form one group, and the tests of a
    module with a module-scoped fixture (a server, a killed run to read back)
    form one group per module, so each such fixture is set up once, not once
    per worker. An explicit ``xdist_group`` mark wins. Without xdist the marks
    change nothing.
    """
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        if "mlflow_server" in info.names_closure:
            item.add_marker(pytest.mark.xdist_group("mlflow-server"))
            continue
        module_scoped = any(
            defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values()
        )
        if module_scoped:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def pytest_runtest_makereport(item, call):
    """Under mpiexec, a test that fails on one rank aborts the whole job.

    Otherwise the failing rank moves on to the next test while the others
    wait in a collective of the failed one, and the job hangs until killed.
    The failure is printed first, so the cause is never lost.
    """
    if (
        call.when == "teardown"
        or call.excinfo is None
        or call.excinfo.errisinstance(pytest.skip.Exception)
    ):
        return
    if not item.config.getoption("--with-mpi", default=False):
        return
    import sys

    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or mpi.COMM_WORLD.Get_size() == 1:
        return
    rank = mpi.COMM_WORLD.Get_rank()
    text = call.excinfo.getrepr(style="short")
    sys.__stderr__.write(f"\n[rank {rank}] FAILED {item.nodeid} ({call.when}):\n{text}\n")
    sys.__stderr__.flush()
    mpi.COMM_WORLD.Abort(1)
