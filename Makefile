# Two commands get a newcomer from clone to a tested install:
#   make install   # .venv with ezpz, an MPI runtime, torch (CPU), wandb, mlflow, test tools
#   make test      # serial suite (on pytest-xdist workers), then the MPI suite under
#                  # mpiexec -n 2 and -n 4
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch==2.13.0 is the CPU wheel; other torch specs pull multi-GB CUDA builds.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test test-serial test-mpi lint bench demo install-parallel clean

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[mpich,all,dev]"
	$(BIN)/python -c "import ezpz, mpi4py.MPI; print('ezpz', ezpz.__version__, 'MPI:', mpi4py.MPI.Get_library_version().splitlines()[0])"

test:
	$(BIN)/python tests/run_suites.py

test-serial:
	$(BIN)/python tests/run_suites.py --only serial

test-mpi:
	$(BIN)/python tests/run_suites.py --only mpi

lint:
	$(BIN)/ruff check ezpz tests benchmarks
	$(BIN)/ruff format --check ezpz tests benchmarks
	$(BIN)/mypy  # config: pyproject.toml [tool.mypy] (strict on ezpz.history, ezpz.tracker)

# .venv-phdf5: Debian's Open MPI + parallel HDF5, mpi4py and h5py built against them.
install-parallel:
	bash scripts/install-parallel-hdf5.sh

demo:
	$(BIN)/mpiexec -n 2 $(BIN)/python -m ezpz.examples.train

clean:
	rm -rf $(VENV) .venv-phdf5 outputs .test-results build *.egg-info
