"""Issue 12 items 5, 7, 14: the csv backend's step column, full disks and formula cells."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

from ezpz.tracker.csv_backend import CSVBackend  # noqa: E402
from ezpz.tracker.csv_table import GrowingCsv, neutralize, unneutralize  # noqa: E402


def read(path):
    return pd.read_csv(path, skip_blank_lines=True)


# -- item 5: a metric named "step" --------------------------------------------
def test_metric_named_step_never_overwrites_the_step(tmp_path):
    backend = CSVBackend(outdir=tmp_path)
    for step in range(3):
        backend.log({"loss": 0.5, "step": 1000 + step}, step=step)
    backend.log({"step": 7, "step_metric": 8.0}, step=3)  # that name taken too
    backend.log_table("history", ["step", "loss", "step"], [[0, 0.5, 1000], [1, 0.5, 1001]])
    backend.finish()
    df = read(tmp_path / "metrics.csv")
    assert df["step"].tolist() == [0, 1, 2, 3]
    assert df["step_metric"].tolist()[:3] == [1000, 1001, 1002]
    assert df["step_metric"].tolist()[3] == 8.0 and df["step_metric_"].tolist()[3] == 7
    table = read(tmp_path / "training_history.csv")
    assert list(table.columns) == ["step", "loss", "step_metric"]
    assert table["step"].tolist() == [0, 1]


def test_history_metric_named_step(tmp_path):
    from ezpz.history import History

    history = History(backends="csv", outdir=tmp_path, report_dir=tmp_path)
    for step in range(3):
        history.update({"loss": 1.0, "step": 10 * step}, step=step)
    history.finalize(outdir=tmp_path, plot=False)
    df = read(tmp_path / "metrics.csv")
    assert df["step"].tolist() == [0, 1, 2] and df["step_metric"].tolist() == [0, 10, 20]
    table = read(tmp_path / "training_history.csv")
    assert table["step"].tolist() == [0, 1, 2]
    assert table.columns.tolist().count("step") == 1


# -- item 14: spreadsheet formulas ---------------------------------------------
@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd", "'+cmd"),
        ("-x", "'-x"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("'=x", "''=x"),
        ("'plain", "'plain"),
        ("-0.5", "-0.5"),
        ("-inf", "-inf"),
        ("loss", "loss"),
        ("", ""),
    ],
)
def test_neutralize_round_trips(text, safe):
    assert neutralize(text) == safe
    assert unneutralize(safe) == text


def test_formula_headers_and_cells_are_neutralised(tmp_path):
    backend = CSVBackend(outdir=tmp_path)
    backend.log({"=cmd": 1.0, "+a": 2.0, "-b": -3.0, "@c": 4.0, "ok": -0.5}, step=0)
    backend.log_table("notes", ["=h", "v"], [['=HYPERLINK("x")', -1.5], ["@x", "-2"]])
    backend.finish()
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,'=cmd,'+a,'-b,'@c,ok"
    df = read(tmp_path / "metrics.csv")
    assert df["'-b"].tolist() == [-3.0] and df["ok"].tolist() == [-0.5]  # numbers untouched
    lines = (tmp_path / "notes.csv").read_text().splitlines()
    assert lines == ["'=h,v", '"\'=HYPERLINK(""x"")",-1.5', "'@x,-2"]

    # a restarted job continues the same columns (the header is read back)
    again = CSVBackend(outdir=tmp_path)
    again.log({"=cmd": 5.0, "new": 1.0}, step=1)
    again.finish()
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "step,'=cmd,'+a,'-b,'@c,ok,new"
    assert read(tmp_path / "metrics.csv")["'=cmd"].tolist() == [1.0, 5.0]


def test_set_outdir_keeps_neutralised_columns(tmp_path):
    backend = CSVBackend(outdir=tmp_path / "a")
    backend.log({"=x": 1.0}, step=0)
    backend.set_outdir(tmp_path / "b")
    backend.log({"=x": 2.0}, step=1)
    backend.finish()
    lines = [ln for ln in (tmp_path / "b" / "metrics.csv").read_text().splitlines() if ln]
    assert lines == ["step,'=x", "0,1.0", "1,2.0"]


# -- item 7: full disk -----------------------------------------------------------
_FULL_DISK = textwrap.dedent(
    """
    import logging, resource, sys
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from ezpz.tracker.csv_backend import CSVBackend
    backend = CSVBackend(outdir=sys.argv[1])
    backend.log({"loss": 0.005, "lr": 0.001}, step=0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
    for step in range(1, 2000):
        backend.log({"loss": 0.005, "lr": 0.001}, step=step)
    backend.log_table("history", ["step", "loss"], [[0, 0.1]] * 500)
    backend.finish()
    print("stopped:", backend.stopped is not None)
    """
)


@pytest.mark.parametrize("limit", [1500, 4099])
def test_full_disk_leaves_only_whole_rows(tmp_path, limit):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(out), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "stopped: True" in proc.stdout
    assert proc.stderr.count("csv backend stopped") == 1, proc.stderr  # one warning
    data = (out / "metrics.csv").read_bytes()
    assert data.endswith(b"\n") and len(data) <= limit
    df = read(out / "metrics.csv")
    assert len(df) > 5
    assert df["step"].tolist() == list(range(len(df)))
    assert (df["lr"] == 0.001).all() and (df["loss"] == 0.005).all()  # no torn value
    assert not (out / "training_history.csv").exists()

    # the disk has room again: a later job appends whole rows after the whole ones
    backend = CSVBackend(outdir=out)
    backend.log({"loss": 0.005, "lr": 0.001}, step=len(df))
    backend.finish()
    df2 = read(out / "metrics.csv")
    assert df2["step"].tolist() == list(range(len(df) + 1)) and (df2["lr"] == 0.001).all()


def test_a_torn_last_row_is_removed_not_completed(tmp_path, caplog):
    path = tmp_path / "metrics.csv"
    table = GrowingCsv(path, first_columns=("step",))
    for step in range(3):
        table.append({"step": step, "loss": 0.005, "lr": 0.001})
    table.close()
    with open(path, "ab") as fh:
        fh.write(b"3,0.005,0.0")  # a row cut mid-value (lr was 0.001)
    backend = CSVBackend(outdir=tmp_path)
    backend.log({"loss": 0.005, "lr": 0.001}, step=3)
    backend.finish()
    assert "removed an incomplete last row" in caplog.text
    df = read(path)
    assert df["step"].tolist() == [0, 1, 2, 3] and (df["lr"] == 0.001).all()


# -- item 20: docs and report.md name the files the csv backend writes ----------
def test_report_lists_the_history_tables_that_are_written(tmp_path):
    from ezpz.history import History

    history = History(backends="csv", outdir=tmp_path, report_dir=tmp_path, config={"a": 1})
    for step in range(3):
        history.update({"train/loss": 1.0, "eval/acc": 0.5}, step=step)
    history.finalize(outdir=tmp_path, plot=False)
    written = {p.name for p in tmp_path.glob("training_history*.csv")}
    assert written == {"training_history_train.csv", "training_history_eval.csv"}
    report = (tmp_path / "report.md").read_text()
    files = report.split("## Files", 1)[1].split("\n## ", 1)[0]
    for name in (*written, "metrics.csv", "config.json"):
        assert f"[{name}]({name})" in files, name
    docs = (Path(__file__).parent.parent / "docs" / "tracker.md").read_text()
    assert "training_history_<group>.csv" in docs and "training_history_train.csv" in docs
