"""The ranks.h5 drivers the MPI tests run: ``mpio`` (parallel h5py only) and ``gather``."""

from __future__ import annotations

import h5py
import pytest

H5PY_MPI = bool(h5py.get_config().mpi)

DRIVERS = [
    pytest.param(
        "mpio",
        marks=pytest.mark.skipif(not H5PY_MPI, reason="h5py built without MPI (serial HDF5)"),
    ),
    "gather",
]
