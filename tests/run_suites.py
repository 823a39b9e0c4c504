"""Run the whole test suite: serial, then MPI at 2 and 4 ranks (and mpio).

``make test`` calls this. Each MPI rank writes its own JUnit XML; rank 0's
console output is shown and the other ranks' output goes to
``.test-results/`` (printed when a phase fails). The last line is one clean
``N passed, N failed, N skipped`` total. Exits non-zero when any phase
fails or when an MPI phase collected no test.

The serial phase runs on pytest-xdist workers when pytest-xdist is installed
(``make install`` installs it): ``EZPZ_TEST_WORKERS`` sets how many (default:
the CPU count, at least 2, since most slow tests wait on subprocesses); ``0``
runs it in one process. Tests marked ``xdist_group`` share a worker.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / ".test-results"
PYTEST_FLAGS = ["-p", "no:cacheprovider", "--color=no", "-q", "-rfEs"]
# Open MPI refuses root and more ranks than cores without these.
OMPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def _counts(xml_files: list[Path]) -> dict[str, set[str]]:
    """Test ids by outcome; a test failed if it failed on any rank."""
    out: dict[str, set[str]] = {"passed": set(), "failed": set(), "skipped": set()}
    for path in xml_files:
        if not path.exists():
            continue
        for case in ET.parse(path).getroot().iter("testcase"):
            tid = f"{case.get('classname')}::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                out["failed"].add(tid)
            elif case.find("skipped") is not None:
                out["skipped"].add(tid)
            else:
                out["passed"].add(tid)
    out["passed"] -= out["failed"]
    out["skipped"] -= out["failed"] | out["passed"]
    return out


def _run(name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd, cwd=ROOT, env={**os.environ, **(env or {})})


def xdist_args() -> list[str]:
    """pytest-xdist flags for the serial phase (none: run it in this process)."""
    workers = os.environ.get("EZPZ_TEST_WORKERS", "").strip()
    if workers in ("0", "1"):
        return []
    if importlib.util.find_spec("xdist") is None:
        print("pytest-xdist is not installed: the serial phase runs in one process")
        return []
    if not workers:
        workers = str(max(2, os.cpu_count() or 1))
    # loadgroup: tests marked xdist_group(name) run on one worker (shared servers).
    return ["-n", workers, "--dist", "loadgroup"]


def run_serial(python: str) -> tuple[int, list[Path]]:
    xml = RESULTS / "serial.xml"
    cmd = [python, "-m", "pytest", "tests", "-m", "not mpi", *xdist_args(), *PYTEST_FLAGS]
    rc = _run("serial", [*cmd, f"--junitxml={xml}"])
    return rc, [xml]


def run_mpi(
    label: str, venv_bin: Path, nranks: int, paths: list[str], extra: list[str]
) -> tuple[int, list[Path]]:
    prefix = RESULTS / label
    mpiexec = str(venv_bin / "mpiexec")
    cmd = [
        mpiexec,
        *extra,
        "-n",
        str(nranks),
        str(venv_bin / "python"),
        str(ROOT / "tests" / "rank_pytest.py"),
        str(prefix),
        *paths,
        "--with-mpi",
        "-m",
        "mpi",
        *PYTEST_FLAGS,
    ]
    rc = _run(label, cmd, OMPI_ENV if extra else None)
    xmls = [Path(f"{prefix}-rank{r}.xml") for r in range(nranks)]
    if rc != 0:
        for r in range(1, nranks):
            log = Path(f"{prefix}-rank{r}.log")
            if log.exists():
                print(f"--- {label} rank {r} output (tail) ---")
                print("\n".join(log.read_text(errors="replace").splitlines()[-60:]))
    return rc, xmls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["serial", "mpi", "mpio"], help="run one phase")
    args = parser.parse_args()
    if RESULTS.exists():
        shutil.rmtree(RESULTS)
    RESULTS.mkdir()
    venv_bin = Path(sys.executable).parent
    phases: list[tuple[str, int, list[Path], float]] = []

    def timed(name: str, result: tuple[int, list[Path]], t0: float) -> None:
        phases.append((name, *result, time.monotonic() - t0))

    if args.only in (None, "serial"):
        t0 = time.monotonic()
        timed("serial", run_serial(sys.executable), t0)
    if args.only in (None, "mpi"):
        for n in (2, 4):
            # tests/faults holds the fault suite's MPI-marked tests too (issue 12)
            paths = ["tests/mpi", "tests/faults"]
            t0 = time.monotonic()
            timed(f"mpi-n{n}", run_mpi(f"mpi-n{n}", venv_bin, n, paths, []), t0)
    # The parallel-HDF5 venv (make install-parallel) runs the per-rank HDF5 tests
    # through h5py's mpio driver with Debian's Open MPI.
    phdf5 = ROOT / ".venv-phdf5" / "bin"
    if args.only in (None, "mpio") and (phdf5 / "python").exists():
        for n in (2, 4):
            t0 = time.monotonic()
            paths = ["tests/mpi/test_ranks_h5.py", "tests/mpi/test_finalize_mpi.py"]
            timed(f"mpio-n{n}", run_mpi(f"mpio-n{n}", phdf5, n, paths, ["--oversubscribe"]), t0)
    elif args.only == "mpio":
        print("no .venv-phdf5: run `make install-parallel` first")
        return 2

    failed_phase = False
    total = {"passed": 0, "failed": 0, "skipped": 0}
    print("\n=== summary")
    for name, rc, xmls, seconds in phases:
        c = _counts(xmls)
        n_pass, n_fail, n_skip = len(c["passed"]), len(c["failed"]), len(c["skipped"])
        bad = rc != 0 or n_fail > 0 or n_pass == 0
        failed_phase |= bad
        note = (
            f" (exit code {rc}; a failing rank aborts the job: see its output above)"
            if rc != 0
            else ""
        )
        note += " (no test passed)" if n_pass == 0 else ""
        print(
            f"{name:>10}: {n_pass} passed, {n_fail} failed, {n_skip} skipped{note} [{seconds:.0f} s]"
        )
        for tid in sorted(c["failed"]):
            print(f"{'':>12}FAILED {tid}")
        total["passed"] += n_pass
        total["failed"] += n_fail + (1 if rc != 0 and n_fail == 0 else 0)
        total["skipped"] += n_skip
    print(f"{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return 1 if failed_phase else 0


if __name__ == "__main__":
    sys.exit(main())
