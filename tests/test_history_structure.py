"""History owns its parts: no part imports core, parts work from narrow inputs (issue 9)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np

from ezpz.history.finalize import finalize
from ezpz.history.rebuild import append_record
from ezpz.history.runinfo import RunInfo
from ezpz.history.store import HistoryStore, LayoutCache
from ezpz.tracker.null import NullTracker

HISTORY = Path(__file__).resolve().parents[1] / "ezpz" / "history"


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any level (TYPE_CHECKING and function bodies too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_part_imports_core():
    offenders = [
        path.name
        for path in sorted(HISTORY.glob("*.py"))
        if path.name not in ("__init__.py", "core.py")
        and "ezpz.history.core" in _imported_modules(path)
    ]
    assert not offenders, f"these modules import ezpz.history.core: {offenders}"


def test_finalize_needs_no_history(tmp_path):
    """finalize() from a RunInfo, a store and a tracker: the seam History uses."""
    store = HistoryStore()
    layouts = LayoutCache(store)
    for step in range(5):
        layouts.get(("train/loss", "eval/acc")).append([1.0 / (step + 1), step / 10], step, 0.0)
    run = RunInfo(run_id="r1", report_dir=tmp_path, config={"lr": 0.1}, run_name="nice")
    result = finalize(run, store, NullTracker(), plot=False, report=False, progress=False)
    assert set(result) == {"train", "eval"}
    np.testing.assert_allclose(result["train"]["loss"].values, 1.0 / np.arange(1, 6))
    assert result["train"].attrs["run_id"] == "r1"
    assert (tmp_path / "r1" / "train.h5").exists()  # RunInfo.default_outdir()


def test_layout_splits_groups_and_statistics():
    store = HistoryStore()
    layout = LayoutCache(store).get(("train/loss", "lr"), ("train/loss",), ("mean", "max"))
    assert layout.full_keys == ("train/loss", "lr", "train/loss/mean", "train/loss/max")
    assert [(e.group.name, e.names) for e in layout.entries] == [
        ("train", ("loss", "loss/mean", "loss/max")),
        ("", ("lr",)),
    ]
    layout.append([1.0, 0.5, 2.0, 3.0], 7, 0.0)
    np.testing.assert_array_equal(store.groups["train"].column("loss/max"), [3.0])
    np.testing.assert_array_equal(store.groups[""].column("lr"), [0.5])
    assert layout.rows() == {"train": 0, "": 0}


def test_rebuild_puts_vectors_in_their_step_row():
    store = HistoryStore()
    append_record(store, 3, 1.5, {"train/loss": 0.5, "train/w": [1.0, "NaN"], "eval/h": [2.0]})
    train, ev = store.groups["train"], store.groups["eval"]
    assert len(train) == 1 and len(ev) == 1  # a vector-only group gets its own row
    np.testing.assert_array_equal(train.vector("w"), [[1.0, np.nan]])
    np.testing.assert_array_equal(ev.steps, [3])


def test_history_without_mpi_never_imports_mpi4py(tmp_path):
    code = (
        "import sys\n"
        "from ezpz.history import History\n"
        f"h = History(report_dir={str(tmp_path)!r}, backends='none', mpi=False)\n"
        "h.update({'loss': 1.0})\n"
        "h.close()\n"
        "assert h.rank == 0 and h.world_size == 1 and h.comm is None\n"
        "print('mpi4py' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
