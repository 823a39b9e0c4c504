"""Issue 12 items 1-4, 15, 16: keys, big integers, deep dicts and steps (one process).

Every test here failed on the code before the fix (see each docstring for
how): the key rule lives in ``ezpz.history.normalize``, the int64 steps in
``ezpz.history.store`` and the step check in ``update()``.
"""

from __future__ import annotations

import json
import logging
import math
import os

import h5py
import numpy as np
import pytest

from ezpz.history import History
from ezpz.history.finalize import history_table
from ezpz.history.normalize import MAX_DEPTH, Normalizer, as_step


@pytest.fixture
def hist(tmp_path):
    h = History(report_dir=tmp_path / "reports", outdir=tmp_path / "out", backends="none")
    yield h
    h.close()


def _lines(hist: History) -> list[dict]:
    lines = [json.loads(line) for line in hist.jsonl_path.read_text().splitlines()]
    return [r for r in lines if "_event" not in r]  # metric lines, not lifecycle events


def _rows(hist: History) -> list[dict]:
    return [r for r in _lines(hist) if "_event" not in r]


# -- item 1: integers of any size ---------------------------------------------------


def test_int_beyond_64_bits_on_one_rank_is_float64_in_history_and_jsonl(hist):
    """Before: TypeError 'Integer exceeds 64-bit range' after the row was stored."""
    hist.update({"tokens_seen": 2**64, "loss": 0.5}, step=0)
    hist.update({"tokens_seen": 2**70, "loss": 0.4}, step=1)
    expected = [float(2**64), float(2**70)]
    np.testing.assert_array_equal(hist.history["tokens_seen"], expected)
    assert [r["tokens_seen"] for r in _rows(hist)] == expected
    # the JSONL rebuilds the same history
    rebuilt = History.from_jsonl(hist.jsonl_path)
    np.testing.assert_array_equal(rebuilt.history["tokens_seen"], expected)


def test_int_in_64_bits_keeps_its_value_in_the_jsonl(hist):
    hist.update({"count": 2**63 - 1, "u": 2**64 - 1}, step=0)
    (row,) = _rows(hist)
    assert float(row["count"]) == float(2**63 - 1) == hist.history["count"][0]
    assert float(row["u"]) == hist.history["u"][0]


def test_int_beyond_float64_is_inf_with_one_warning(hist, caplog):
    with caplog.at_level(logging.WARNING, logger="ezpz"):
        for step in range(3):
            hist.update({"huge": 10**400, "neg": {"x": -(10**400)}, "ok": 1}, step=step)
    assert hist.history["huge"].tolist() == [math.inf] * 3
    assert hist.history["neg/x"].tolist() == [-math.inf] * 3
    assert [r["huge"] for r in _rows(hist)] == ["Infinity"] * 3
    assert caplog.text.count("'huge' is an integer beyond float64") == 1


# -- items 2 and 3: keys no output format can hold -----------------------------------


def test_nul_in_key_is_repaired_and_finalize_writes_everything(hist, tmp_path, caplog):
    """Before: finalize() raised in h5py (VLEN strings do not support embedded NULLs)."""
    with caplog.at_level(logging.WARNING, logger="ezpz"):
        for step in range(3):
            hist.update({"a\x00b": float(step), "train/x\x00": 1.0, "ok": 2.0}, step=step)
    assert set(hist.history) >= {"a\ufffdb", "train/x\ufffd", "ok"}
    assert caplog.text.count("'a\\x00b' recorded as 'a\ufffdb'") == 1
    hist.finalize(plot=False)
    out = tmp_path / "out"
    with h5py.File(out / "history.h5", "r") as f:
        keys = {f[name].attrs.get("key") for name in f if "key" in f[name].attrs}
    assert {"a\ufffdb", "ok"} <= {k.decode() if isinstance(k, bytes) else k for k in keys}
    assert (out / "train.h5").is_file() and (out / "report.md").is_file()


def test_lone_surrogate_key_is_repaired_not_raised(hist, tmp_path, caplog):
    """Before: update() raised 'str is not valid UTF-8' (on rank 0 only)."""
    key = os.fsdecode(b"file-\xe9.bin")  # a latin-1 file name: a lone surrogate
    assert "\udce9" in key
    with caplog.at_level(logging.WARNING, logger="ezpz"):
        hist.update({key: 1.0, "nested": {"\ud800": 2.0}}, step=0)
        hist.update({key: 3.0, "nested": {"\ud800": 4.0}}, step=1)
    np.testing.assert_array_equal(hist.history["file-\ufffd.bin"], [1.0, 3.0])
    np.testing.assert_array_equal(hist.history["nested/\ufffd"], [2.0, 4.0])
    assert [r["file-\ufffd.bin"] for r in _rows(hist)] == [1.0, 3.0]
    assert caplog.text.count("file-\\udce9.bin") == 1
    hist.finalize(plot=False)
    assert (tmp_path / "out" / "history.h5").is_file()


def test_repaired_key_equal_to_another_key_keeps_the_last(hist):
    hist.update({"a\ufffd": 1.0, "a\x00": 2.0}, step=0)
    np.testing.assert_array_equal(hist.history["a\ufffd"], [2.0])
    hist.update({"a\ufffd": 1.0, "a\x00": 5.0}, step=1)  # the cached rule still de-duplicates
    np.testing.assert_array_equal(hist.history["a\ufffd"], [2.0, 5.0])


# -- item 4: the JSONL's own fields ------------------------------------------------------


@pytest.mark.parametrize("reserved", ["_step", "_time", "_event"])
def test_reserved_keys_are_skipped_with_one_warning(hist, reserved, caplog):
    """Before: the JSONL line held the field twice and from_jsonl rebuilt step 7, not 100."""
    with caplog.at_level(logging.WARNING, logger="ezpz"):
        hist.update({reserved: 7, "loss": 0.5}, step=100)
        hist.update({reserved: 8, "loss": 0.4}, step=101)
    assert reserved not in hist.history
    raw = [line for line in hist.jsonl_path.read_text().splitlines() if '"loss"' in line]
    assert all(line.count(f'"{reserved}"') == (1 if reserved != "_event" else 0) for line in raw)
    assert caplog.text.count(f"skipping metric '{reserved}'") == 1
    rebuilt = History.from_jsonl(hist.jsonl_path)
    np.testing.assert_array_equal(rebuilt.store.groups[""].steps, [100, 101])
    np.testing.assert_array_equal(rebuilt.history["loss"], [0.5, 0.4])


def test_reserved_name_as_a_prefix_is_fine(hist):
    hist.update({"_step": {"x": 1.0}, "_time/y": 2.0}, step=0)
    assert hist.history["_step/x"].tolist() == [1.0]
    assert hist.history["_time/y"].tolist() == [2.0]


def test_key_rule_is_the_same_on_every_call_and_instance():
    # Ranks each own a Normalizer: the same input must give the same keys.
    metrics = {"_step": 1, "a\x00": 2, "\udce9": 3, "ok": 4, "n": {"_time": 5}}
    results = [Normalizer()(metrics) for _ in range(3)]
    first = results[0].scalar_keys
    assert first == ["a\ufffd", "\ufffd", "ok", "n/_time"]
    assert all(r.scalar_keys == first for r in results)


# -- item 15: self-referencing and very deep dicts ----------------------------------------


def test_self_referencing_dict_skips_the_branch(hist, caplog):
    """Before: RecursionError."""
    loop: dict = {"x": 1.0}
    loop["self"] = loop
    with caplog.at_level(logging.WARNING, logger="ezpz"):
        hist.update({"loop": loop, "loss": 0.5}, step=0)
    assert hist.history["loop/x"].tolist() == [1.0]
    assert hist.history["loss"].tolist() == [0.5]
    assert "contains itself" in caplog.text


def test_dict_nested_2000_deep_skips_below_the_limit(hist, caplog):
    """Before: RecursionError."""
    deep: dict = {"leaf": 1.0}
    for _ in range(2000):
        deep = {"d": deep}
    with caplog.at_level(logging.WARNING, logger="ezpz"):
        hist.update({"deep": deep, "loss": 0.5}, step=0)
        hist.update({"deep": deep, "loss": 0.5}, step=1)
    assert hist.history["loss"].tolist() == [0.5, 0.5]
    assert caplog.text.count(f"nested deeper than {MAX_DEPTH} levels") == 1


def test_depth_limit_is_exact():
    def nested(levels: int) -> dict:
        d: dict = {"v": 1.0}
        for _ in range(levels - 1):
            d = {"k": d}
        return d

    ok = Normalizer()(nested(MAX_DEPTH))  # a key of MAX_DEPTH parts is recorded
    assert ok.scalar_keys == ["/".join(["k"] * (MAX_DEPTH - 1) + ["v"])]
    assert Normalizer()(nested(MAX_DEPTH + 1)).scalar_keys == []


def test_self_referencing_list_is_skipped(hist):
    loop: list = [1.0]
    loop.append(loop)
    hist.update({"loop": loop, "loss": 0.5}, step=0)
    assert "loop" not in hist.history and hist.history["loss"].tolist() == [0.5]


# -- item 16: steps are exact int64 ------------------------------------------------------


BIG_STEPS = [2**53 + 1, 2**62 + 3, 2**63 - 1, -(2**63)]


def test_large_steps_are_exact_in_history_jsonl_dataset_and_rebuild(hist, tmp_path):
    """Before: 2**53 + 1 came back as 2**53 (steps were a float64 column)."""
    for step in BIG_STEPS:
        hist.update({"loss": 1.0, "eval/acc": 0.5}, step=step)
    for g in ("", "eval"):
        steps = hist.store.groups[g].steps
        assert steps.dtype == np.int64 and steps.tolist() == BIG_STEPS
    assert [r["_step"] for r in _rows(hist)] == BIG_STEPS
    rebuilt = History.from_jsonl(hist.jsonl_path)
    assert rebuilt.store.groups[""].steps.tolist() == BIG_STEPS
    result = hist.finalize(plot=False)
    assert result["eval"]["step"].values.tolist() == BIG_STEPS
    _columns, rows = history_table(result["eval"], 0)  # the table uploaded to backends
    assert [row[0] for row in rows] == BIG_STEPS
    with h5py.File(tmp_path / "out" / "history.h5", "r") as f:
        assert f["step"].dtype == np.int64 and f["step"][:].tolist() == BIG_STEPS


@pytest.mark.parametrize("step", [2**63, 2**70, -(2**63) - 1, 1e19, np.uint64(2**64 - 1)])
def test_step_outside_int64_is_an_error_at_update(hist, step):
    """Before: 2**70 wrapped to a negative int64 in the datasets."""
    with pytest.raises(ValueError, match="outside int64"):
        hist.update({"loss": 1.0}, step=step)
    assert "loss" not in hist.history  # nothing was recorded
    assert _rows(hist) == []


def test_as_step_accepts_whole_numbers_only():
    assert as_step(np.int64(5)) == 5
    assert as_step(7.0) == 7
    assert as_step(2**63 - 1) == 2**63 - 1
    with pytest.raises(TypeError):
        as_step(1.5)
    with pytest.raises(TypeError):
        as_step("3")
