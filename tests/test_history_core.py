"""History on one process: constructor rules, update(), groups, JSONL, from_jsonl."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ezpz.history import History


@pytest.fixture
def hist(tmp_path):
    h = History(report_dir=tmp_path / "reports", backends="none")
    yield h
    h.close()


def test_defaults_jsonl_under_report_dir_named_by_run_id(hist, tmp_path):
    assert hist.jsonl_path == tmp_path / "reports" / f"{hist.run_id}.jsonl"
    assert hist.distributed is False
    assert hist.rank == 0 and hist.world_size == 1


def test_update_records_values_and_returns_summary(hist):
    s = hist.update({"loss": 0.42, "lr": 1e-3}, step=0)
    assert s.startswith("loss=0.420000")
    hist.update({"loss": 0.40, "lr": 1e-3}, step=1)
    np.testing.assert_array_equal(hist.history["loss"], [0.42, 0.40])
    np.testing.assert_array_equal(hist.store.groups[""].steps, [0, 1])


def test_step_defaults_to_update_count(hist):
    for _ in range(3):
        hist.update({"x": 1.0})
    np.testing.assert_array_equal(hist.store.groups[""].steps, [0, 1, 2])


def test_precision_controls_decimals(hist):
    assert hist.update({"loss": 0.123456789}, precision=3).startswith("loss=0.123")


def test_groups_have_their_own_step_axis(hist):
    for i in range(5):
        metrics = {"train/loss": float(i)}
        if i % 2 == 0:
            metrics["eval/acc"] = 0.1 * i
        hist.update(metrics, step=i)
    groups = hist.store.groups
    assert list(groups) == ["train", "eval"]
    assert len(groups["train"]) == 5 and len(groups["eval"]) == 3
    np.testing.assert_array_equal(groups["eval"].steps, [0, 2, 4])
    np.testing.assert_allclose(hist.history["eval/acc"], [0.0, 0.2, 0.4])
    assert not np.isnan(hist.history["eval/acc"]).any()  # no padding across groups


def test_vectors_stored_per_group(hist):
    hist.update({"train/chains": np.arange(3.0), "train/loss": 1.0})
    hist.update({"train/chains": np.arange(3.0) + 1})
    hist.update({"eval/chains": [5.0, 6.0]})
    assert hist.history["train/chains"].shape == (2, 3)
    np.testing.assert_array_equal(hist.history["train/loss"], [1.0, np.nan])
    np.testing.assert_array_equal(hist.history["eval/chains"], [[5.0, 6.0]])


def test_jsonl_one_strict_object_per_update_readable_by_pandas(hist):
    hist.update({"loss": 1.0, "nested": {"a": 2}}, step=10)
    hist.update({"loss": float("nan"), "inf": float("inf")}, step=11)
    hist.close()
    lines = [x for x in hist.jsonl_path.read_text().splitlines() if '"_event"' not in x]
    assert len(lines) == 2  # besides the lifecycle events (start, ...: docs/restarts.md)
    first = json.loads(lines[0])
    assert first["_step"] == 10 and first["loss"] == 1.0 and first["nested/a"] == 2.0
    assert isinstance(first["_time"], float)
    df = pd.read_json(hist.jsonl_path, lines=True)
    assert list(df["_step"].dropna()) == [10, 11]


def test_from_jsonl_restores_history_including_nonfinite(hist):
    rng = np.random.default_rng(0)
    for i in range(20):
        m = {"train/loss": float(rng.normal()), "train/v": rng.normal(size=3)}
        if i == 3:
            m["train/loss"] = float("nan")
        if i == 4:
            m["train/loss"] = float("-inf")
        if i % 5 == 0:
            m["eval/acc"] = float("inf") if i == 10 else float(rng.random())
        hist.update(m, step=i)
    hist.close()
    back = History.from_jsonl(hist.jsonl_path)
    assert set(back.history) == set(hist.history)
    for key in hist.history:
        np.testing.assert_array_equal(back.history[key], hist.history[key])
    for g in hist.store.groups:
        np.testing.assert_array_equal(back.store.groups[g].steps, hist.store.groups[g].steps)
        np.testing.assert_array_equal(back.store.groups[g].times, hist.store.groups[g].times)


def test_vector_only_group_gets_one_row_per_update_and_reads_back(hist):
    hist.update({"a": [1.0], "b": [2.0, 3.0]})
    hist.close()
    assert len(hist.store.groups[""]) == 1
    back = History.from_jsonl(hist.jsonl_path)
    assert len(back.store.groups[""]) == 1
    np.testing.assert_array_equal(back.history["b"], [[2.0, 3.0]])


def test_from_jsonl_assigns_statistics_to_their_base_group(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"_step":0,"_time":1.0,"loss":1.0,"loss/mean":2.0,"loss/std":"NaN","train/x":3.0}\n'
    )
    back = History.from_jsonl(path)
    assert list(back.store.groups) == ["", "train"]
    assert back.store.groups[""].scalar_names() == ["loss", "loss/mean", "loss/std"]
    assert math.isnan(back.history["loss/std"][0])


def test_append_vs_overwrite(tmp_path):
    path = tmp_path / "m.jsonl"
    for overwrite in (False, False, True):
        with History(jsonl_path=path, jsonl_overwrite=overwrite, backends="none") as h:
            h.update({"a": 1.0})

    def rows() -> int:  # metric lines (lifecycle events aside)
        return sum('"_event"' not in x for x in path.read_text().splitlines())

    assert rows() == 1
    with History(jsonl_path=path, backends="none") as h:
        h.update({"a": 1.0})
    assert rows() == 2


def test_skipped_values_never_raise_and_warn_once(hist, caplog):
    for _ in range(3):
        hist.update({"loss": 1.0, "name": "resnet", "none": None})
    assert sum("'name'" in r.getMessage() for r in caplog.records) == 1
    assert "name" not in hist.history


def test_non_mapping_is_a_clear_error(hist):
    with pytest.raises(TypeError, match="dict of metrics"):
        hist.update([1, 2, 3])


def test_repeated_key_last_wins(hist):
    hist.update({"a/b": 1.0, "a": {"b": 2.0}})
    np.testing.assert_array_equal(hist.history["a/b"], [2.0])


def test_unknown_backend_is_rejected_listing_known(tmp_path):
    with pytest.raises(ValueError, match="csv"):
        History(report_dir=tmp_path, backends="nosuchbackend")


def test_statistics_off_switches(monkeypatch, tmp_path):
    monkeypatch.setenv("EZPZ_LOCAL_HISTORY", "1")
    h = History(report_dir=tmp_path, backends="none", distributed_history=True)
    assert h.distributed is False
    h.update({"loss": 1.0})
    assert "loss/mean" not in h.history


def test_step_accepts_integral_numbers_and_rejects_the_rest(hist):
    hist.update({"x": 1.0}, step=np.int64(3))
    hist.update({"x": 1.0}, step=4.0)
    np.testing.assert_array_equal(hist.store.groups[""].steps, [3, 4])
    for bad in ("5", 2.5, float("nan"), object()):
        with pytest.raises(TypeError, match="step must be an integer"):
            hist.update({"x": 1.0}, step=bad)
    assert len(hist.store.groups[""]) == 2  # nothing recorded by the rejected calls
