"""The csv backend: growing columns, always readable (even after SIGKILL), config, tables."""

from __future__ import annotations

import inspect
import io
import json
import math
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from ezpz.tracker import resolve_tracker
from ezpz.tracker.csv_backend import CSVBackend
from ezpz.tracker.csv_table import GrowingCsv


def read(path) -> pd.DataFrame:
    return pd.read_csv(path)


def test_columns_extend_and_every_intermediate_file_is_readable(tmp_path):
    backend = CSVBackend(outdir=tmp_path)
    rows = [
        ({"loss": 0.5, "lr": 1e-4}, 0),
        ({"loss": 0.3, "lr": 1e-4, "grad_norm": 0.8}, 1),
        ({"eval/acc": 0.9}, 2),
        ({"loss": 0.1, "lr": 1e-4, "grad_norm": 0.2, "eval/acc": 0.95}, 3),
    ]
    for i, (metrics, step) in enumerate(rows):
        backend.log(metrics, step=step)
        df = read(tmp_path / "metrics.csv")
        assert len(df) == i + 1
        assert list(df["step"]) == [s for _, s in rows[: i + 1]]
    assert list(df.columns) == ["step", "loss", "lr", "grad_norm", "eval/acc"]
    assert df["loss"].tolist()[:2] == [0.5, 0.3]
    assert math.isnan(df["grad_norm"][0]) and df["grad_norm"][1] == 0.8
    assert math.isnan(df["loss"][2]) and df["eval/acc"][2] == 0.9
    backend.finish()
    # The padding reserved for the header is blank lines, which csv.DictReader also skips.
    import csv

    with open(tmp_path / "metrics.csv", newline="") as fh:
        assert [r["step"] for r in csv.DictReader(fh)] == ["0", "1", "2", "3"]


def test_values_round_trip_through_pandas(tmp_path):
    backend = CSVBackend(outdir=tmp_path)
    backend.log(
        {
            "x": 0.1 + 0.2,
            "tiny": 1e-300,
            "nan": float("nan"),
            "inf": float("inf"),
            "ninf": float("-inf"),
            "int": 7,
            "flag": True,
            "vec": [1.0, float("nan"), 3.0],
            'we,"ird"\nkey': 1.0,
        },
        step=5,
    )
    df = read(tmp_path / "metrics.csv")
    row = df.iloc[0]
    assert row["x"] == 0.1 + 0.2 and row["tiny"] == 1e-300
    assert math.isnan(row["nan"]) and row["inf"] == math.inf and row["ninf"] == -math.inf
    assert row["int"] == 7 and row["flag"] == 1 and row["step"] == 5
    vec = json.loads(row["vec"])
    assert vec[0] == 1.0 and math.isnan(vec[1]) and vec[2] == 3.0
    assert row['we,"ird"\nkey'] == 1.0


def test_uncommitted_metrics_get_their_own_row(tmp_path):
    """commit=False is not merged into the next row: one row per log() (one per update)."""
    backend = CSVBackend(outdir=tmp_path)
    backend.log({"a": 1.0}, step=1, commit=False)
    backend.log({"b": 2.0}, step=1)
    backend.log({"c": 3.0}, step=2, commit=False)
    backend.finish()
    df = read(tmp_path / "metrics.csv")
    assert df["step"].tolist() == [1, 1, 2]
    assert df["a"].tolist()[0] == 1.0 and math.isnan(df["a"].tolist()[1])
    assert df["b"].tolist()[1] == 2.0 and math.isnan(df["b"].tolist()[0])
    assert df["c"].tolist()[2] == 3.0


def test_header_growth_rewrites_the_file_only_logarithmically(tmp_path):
    table = GrowingCsv(tmp_path / "m.csv", first_columns=("step",))
    n = 1500
    for i in range(n):
        table.append({"step": i, f"metric_{i:04d}": float(i)})  # a new column every row
    table.close()
    # header of ~19 kB: doublings from 256 B plus one per page crossed, not one per column
    assert table.rewrites <= 16, table.rewrites
    df = read(tmp_path / "m.csv")
    assert len(df) == n and len(df.columns) == n + 1
    assert df["metric_0777"].dropna().tolist() == [777.0]
    assert df["step"].tolist() == list(range(n))


def test_existing_file_is_continued_not_truncated(tmp_path):
    path = tmp_path / "metrics.csv"
    first = CSVBackend(outdir=tmp_path)
    first.log({"loss": 1.0}, step=0)
    first.finish()
    second = CSVBackend(outdir=tmp_path)  # e.g. a requeued job
    second.log({"loss": 0.5, "acc": 0.7}, step=1)
    second.finish()
    df = read(path)
    assert df["step"].tolist() == [0, 1] and df["acc"].tolist()[1] == 0.7


def test_a_foreign_csv_without_padding_is_continued(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n0,1.0\n1,0.9")  # no trailing newline either
    table = GrowingCsv(path)
    table.append({"step": 2, "loss": 0.8, "new": 1.0})
    table.close()
    df = read(path)
    assert df["loss"].tolist() == [1.0, 0.9, 0.8] and df["new"].tolist()[2] == 1.0


def test_config_json_merges_and_tables_are_written(tmp_path):
    backend = CSVBackend(outdir=tmp_path, config={"lr": 0.1, "nested": {"a": 1}})
    backend.log_config({"batch": 32, "path": tmp_path})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config == {"lr": 0.1, "nested": {"a": 1}, "batch": 32, "path": str(tmp_path)}
    backend.log_table("training_history", ["step", "loss"], [[0, 0.5], [1, float("nan")]])
    table = read(tmp_path / "training_history.csv")
    assert table["step"].tolist() == [0, 1] and table["loss"][0] == 0.5
    assert math.isnan(table["loss"][1])
    backend.finish()


def test_set_outdir_moves_outputs_and_keeps_the_old_files(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    backend = CSVBackend(outdir=old, config={"lr": 0.1})
    backend.log({"loss": 1.0, "vec": [1.0, 2.0]}, step=0)
    backend.set_outdir(new)
    backend.log({"loss": 0.5, "acc": 0.9}, step=1)
    backend.log_table("training_history", ["step"], [[0], [1]])
    backend.finish()
    df = read(new / "metrics.csv")
    assert df["step"].tolist() == [0, 1] and df["loss"].tolist() == [1.0, 0.5]
    assert json.loads(df["vec"][0]) == [1.0, 2.0]
    assert json.loads((new / "config.json").read_text()) == {"lr": 0.1}
    assert (new / "training_history.csv").exists()
    assert read(old / "metrics.csv")["step"].tolist() == [0]


def test_other_ranks_write_and_keep_nothing(tmp_path):
    backend = CSVBackend(outdir=tmp_path, config={"a": 1}, rank=1)
    backend.log({"loss": 1.0}, step=0, commit=False)
    backend.log_config({"b": 2})
    backend.log_table("training_history", ["a"], [[1]])
    backend.set_outdir(tmp_path / "x")
    backend.finish()
    assert list(tmp_path.iterdir()) == []
    assert backend._pending == {} and backend._config == {}


def test_through_the_tracker_and_history(tmp_path):
    from ezpz.history import History

    history = History(
        backends="csv", outdir=tmp_path / "out", report_dir=tmp_path / "rep", config={"lr": 0.1}
    )
    for step in range(20):
        metrics = {"loss": 1.0 / (step + 1), "train/acc": step / 20}
        if step % 5 == 0:
            metrics["eval/acc"] = step / 10
        history.update(metrics, step=step)
    assert history.tracker.flush(timeout=30)
    df = read(tmp_path / "out" / "metrics.csv")
    assert df["step"].tolist() == list(range(20))
    assert df["loss"].tolist() == pytest.approx(history.history["loss"].tolist())
    assert df["eval/acc"].dropna().tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"lr": 0.1}
    assert history.tracker.finish(timeout=30).ok
    history.close()


def row_for(i: int) -> dict:
    """Row ``i`` of the test writer: a new column every 5 rows for 2000 rows, so
    in-place header growth and whole-file rewrites both happen all the time."""
    row = {"step": i, **{f"c{j}": i * 1000 + j for j in range(0, min(i // 5, 30) + 1, 3)}}
    row[f"k{(i // 5) % 400}"] = float(i)
    return row


# Runs in a child process that the tests SIGKILL at random moments.
WRITER = inspect.getsource(row_for) + textwrap.dedent(
    """
    import sys
    from ezpz.tracker.csv_table import GrowingCsv

    path, start = sys.argv[1], int(sys.argv[2])
    table = GrowingCsv(path, first_columns=("step",))
    print("ready", flush=True)
    i = start
    while True:
        table.append(row_for(i))
        i += 1
    """
)


def _check_consistent(path) -> int:
    """Every row is whole: each cell is what ``row_for`` wrote for that row, no more.

    A SIGKILL can cut the last row's write at a page boundary; such a line has
    no newline and the next writer removes it, so it is left out here.
    """
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    df = pd.read_csv(io.BytesIO(data))
    steps = df["step"].tolist()
    assert steps == list(range(len(steps))), "rows lost, duplicated or out of order"
    cells = df.set_index("step").stack().dropna()  # (step, column) -> value
    expected = {
        (i, col): value for i in steps for col, value in row_for(i).items() if col != "step"
    }
    assert dict(cells.items()) == expected
    return len(steps)


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_never_leaves_a_torn_file_and_the_next_run_continues(tmp_path, seed):
    path = tmp_path / "metrics.csv"
    rows = 0
    for _ in range(2):  # kill, then a restarted writer continues the same file and is killed too
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(rows)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.02 + 0.05 * seed)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        rows = _check_consistent(path)
        assert rows > 0
    # temp files of killed writers are cleaned up by the next writer
    GrowingCsv(path).close()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_readable_by_pandas_after_every_single_append(tmp_path):
    """Header growth in place, rewrites and plain appends: the file parses after each."""
    path = tmp_path / "metrics.csv"
    table = GrowingCsv(path, first_columns=("step",))
    for i in range(300):
        table.append(row_for(i))
        assert _check_consistent(path) == i + 1
    assert table.rewrites >= 2  # the rename path was exercised too
    table.close()


def test_csv_backend_via_resolve_tracker_on_rank_zero_only(tmp_path):
    t1 = resolve_tracker(backends="csv", outdir=tmp_path, rank=1, world_size=2)
    t1.log({"a": 1.0}, step=0)
    t1.finish(timeout=30)
    assert list(tmp_path.iterdir()) == []
    t0 = resolve_tracker(backends="csv", outdir=tmp_path, rank=0, world_size=2)
    t0.log({"a": 1.0}, step=0)
    assert t0.finish(timeout=30).ok
    assert read(tmp_path / "metrics.csv")["a"].tolist() == [1.0]


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("history", "training_history.csv"),
        ("history/train", "training_history_train.csv"),
        ("my table", "my_table.csv"),
        ("../x", "_x.csv"),
    ],
)
def test_table_file_names(key, name):
    from ezpz.tracker.csv_backend import table_filename

    assert table_filename(key) == name


def test_finalize_redirects_csv_outputs_to_its_outdir(tmp_path):
    from ezpz.history import History

    first, final = tmp_path / "logs", tmp_path / "final"
    history = History(backends="csv", outdir=first, report_dir=tmp_path / "rep", config={"lr": 0.1})
    for step in range(5):
        history.update({"loss": 1.0 / (step + 1), "acc": step / 5}, step=step)
    history.finalize(outdir=final, plot=False, report=False)
    history.close()
    metrics = read(final / "metrics.csv")
    assert metrics["step"].tolist() == list(range(5))
    assert metrics["loss"].tolist() == pytest.approx([1.0 / (s + 1) for s in range(5)])
    table = read(final / "training_history.csv")
    assert table["loss"].tolist() == pytest.approx(metrics["loss"].tolist())
    assert json.loads((final / "config.json").read_text()) == {"lr": 0.1}
    assert read(first / "metrics.csv")["step"].tolist() == list(range(5))
    assert history.tracker.finished


def test_set_outdir_copies_rows_shorter_than_the_header(tmp_path):
    """One row per log() call leaves rows with trailing empty cells; the copy keeps them."""
    backend = CSVBackend(outdir=tmp_path / "a")
    backend.log({"timing": 0.5}, step=0, commit=False)
    backend.log({"timing": 0.1, "loss": 1.0, "acc": 0.5}, step=0)
    backend.log({"timing": 0.2}, step=1, commit=False)
    backend.set_outdir(tmp_path / "b")
    backend.finish()
    df = read(tmp_path / "b" / "metrics.csv")
    assert df["step"].tolist() == [0, 0, 1]
    assert df["timing"].tolist() == [0.5, 0.1, 0.2] and df["loss"].tolist()[1] == 1.0
