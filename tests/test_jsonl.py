"""JSONL: strict JSON, non-finite round trip, torn lines, append vs overwrite."""

from __future__ import annotations

import json
import math

from ezpz.history.jsonl import JsonlWriter, decode_value, read_records


def test_lines_are_strict_json_and_nonfinite_roundtrip(tmp_path):
    path = tmp_path / "run.jsonl"
    w = JsonlWriter(path)
    w.write(0, 1.5, {"a": 1.0, "b": [1.0, 2.0]})
    w.write(1, 2.5, {"a": math.nan, "b": [math.inf, -math.inf], "nullable": 1.0})
    w.close()
    lines = path.read_text().splitlines()
    for line in lines:  # python's json in strict mode rejects NaN/Infinity tokens
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    recs = list(read_records(path))
    assert recs[0] == {"_step": 0, "_time": 1.5, "a": 1.0, "b": [1.0, 2.0]}
    assert math.isnan(decode_value(recs[1]["a"]))
    assert decode_value(recs[1]["b"]) == [math.inf, -math.inf]


def test_append_by_default_overwrite_on_request(tmp_path):
    path = tmp_path / "run.jsonl"
    for _ in range(2):
        w = JsonlWriter(path)
        w.write(0, 0.0, {"a": 1.0})
        w.close()
    assert len(path.read_text().splitlines()) == 2
    w = JsonlWriter(path, overwrite=True)
    w.write(0, 0.0, {"a": 1.0})
    w.close()
    assert len(path.read_text().splitlines()) == 1


def test_torn_last_line_is_skipped(tmp_path, caplog):
    path = tmp_path / "run.jsonl"
    path.write_bytes(b'{"_step":0,"_time":0.0,"a":1.0}\n{"_step":1,"_ti')
    recs = list(read_records(path))
    assert recs == [{"_step": 0, "_time": 0.0, "a": 1.0}]
    assert "not valid JSON" in caplog.text
