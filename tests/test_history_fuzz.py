"""Arbitrary dicts never make update() raise, and the JSONL stays valid."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ezpz.history import History
from ezpz.history.keys import split_stat

keys = st.text(alphabet="abcxyz/_-. 0", min_size=0, max_size=8)
leaves = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.builds(np.float32, st.floats(width=32, allow_nan=True)),
    st.builds(lambda xs: np.asarray(xs), st.lists(st.integers(-5, 5), max_size=3)),
)
metrics = st.recursive(
    st.dictionaries(keys, leaves, max_size=6),
    lambda children: st.dictionaries(keys, st.one_of(leaves, children), max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(metrics, min_size=1, max_size=5))
def test_update_never_raises_and_jsonl_is_strict(tmp_path_factory, batch):
    d = tmp_path_factory.mktemp("fuzz")
    with History(report_dir=d, backends="none") as h:
        for m in batch:
            assert isinstance(h.update(m), str)
        _ = {k: h.history[k] for k in h.history}
    lines = [x for x in h.jsonl_path.read_text().splitlines() if '"_event"' not in x]
    assert len(lines) == len(batch)
    for line in lines:
        rec = json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        assert isinstance(rec["_step"], int)
    back = History.from_jsonl(h.jsonl_path)
    assert set(back.history) == set(h.history)
    # A raw key that looks like a statistic of another raw key ("x" and "x/mean")
    # is read back into x's group (documented); compare values when none does.
    if not any(split_stat(k, set(h.history)) for k in h.history):
        for key in h.history:
            np.testing.assert_array_equal(back.history[key], h.history[key])
