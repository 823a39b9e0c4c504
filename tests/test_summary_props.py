"""Property tests: the console summary never raises and stays bounded for any floats."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ezpz.utils import SummaryFormatter, format_compact_summary, format_std, format_value

BASES = ["loss", "acc", "dtf", "train/loss", "eval/acc", "iter", "train/step", "lr", "momentum"]
MEMORY = ["mem_alloc", "mem_peak_alloc", "mem_reserved", "mem_peak_reserved", "train/mem_alloc"]
SUFFIXES = ["", "/mean", "/max", "/min", "/std", "/avg"]
KEYS = st.one_of(
    st.builds(lambda b, s: b + s, st.sampled_from(BASES + MEMORY), st.sampled_from(SUFFIXES)),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12),
)
COMPANIONS = {"mean", "max", "min", "std", "avg", "count", "nonfinite", "max_rank", "min_rank"}
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
STD_TEXT = re.compile(r"^(0|nan|-?inf|-?\d{1,2}(\.\d{1,3})?|-?\d\.\de[+-][1-9]\d*)$")


@settings(max_examples=300, deadline=None)
@given(
    metrics=st.dictionaries(KEYS, ANY_FLOAT, max_size=25),
    precision=st.integers(0, 10),
)
def test_any_float_dict_formats(metrics, precision):
    line = format_compact_summary(metrics, precision=precision)
    assert line == SummaryFormatter(precision).format(metrics)
    assert "\n" not in line
    # no number token runs away: 1e15 and up goes scientific
    for token in re.findall(r"=([^ (]+)", line):
        assert len(token) <= 48, line
    # every non-statistic key is shown (memory keys as one memory token)
    for key in metrics:
        base, _, suffix = key.rpartition("/")
        if base in metrics and suffix in COMPANIONS:
            continue
        if any(key.endswith(m) for m in ("mem_alloc", "mem_reserved", "mem_peak_alloc")):
            continue
        if key.endswith("mem_peak_reserved"):
            continue
        assert f"{key}=" in line, (key, line)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.dictionaries(KEYS, ANY_FLOAT, max_size=10), min_size=1, max_size=8))
def test_formatter_over_changing_key_sets(rows):
    formatter = SummaryFormatter(precision=4)
    for row in rows:
        assert isinstance(formatter.format(row), str)


@settings(max_examples=500, deadline=None)
@given(ANY_FLOAT)
def test_std_text_shape_and_accuracy(s):
    text = format_std(s)
    assert STD_TEXT.match(text), text
    if math.isfinite(s) and s != 0:
        # two significant figures: within 5 % of the true value
        assert abs(Decimal(text) - Decimal(s)) <= Decimal("0.05") * abs(Decimal(s)), (s, text)
        assert len(text) <= 9  # "-1.0e+300" at worst


@settings(max_examples=500, deadline=None)
@given(ANY_FLOAT, st.integers(0, 12))
def test_value_text_is_bounded_and_close(v, precision):
    text = format_value(v, precision)
    assert len(text) <= 16 + 2 * precision, text
    if math.isfinite(v):
        error = abs(Decimal(text) - Decimal(v))
        # exact to the printed decimals, or 2 significant figures for tiny/huge values
        allowed = max(
            Decimal(5) * Decimal(10) ** -(precision + 1), Decimal("0.05") * abs(Decimal(v))
        )
        assert error <= allowed, text


# Values the one-template path takes (fixed-point range), plus at most one it hands back.
MODERATE = st.floats(min_value=1e-3, max_value=1e6) | st.floats(min_value=-1e6, max_value=-1e-3)
SPECIAL = st.none() | st.tuples(
    st.integers(0, 29),
    st.sampled_from([0.0, -0.0, 1e-9, -1e-9, 2e15, math.nan, math.inf, 0, 7, -3, 10**15]),
)


@settings(max_examples=300, deadline=None)
@given(
    bases=st.lists(st.sampled_from(BASES), min_size=1, max_size=6, unique=True),
    values=st.lists(MODERATE, min_size=30, max_size=30),
    special=SPECIAL,
    with_stats=st.booleans(),
    precision=st.integers(0, 8),
    plain=st.booleans(),
)
def test_stats_lines_match_the_general_renderer(
    bases, values, special, with_stats, precision, plain
):
    """The one-template paths (plain and metric(± std)/counter lines) give the general text.

    ``plain_numbers=True`` (History's promise of float/int values) gives the same text.
    """
    if special is not None:
        values[special[0]] = special[1]
    it = iter(values)
    row: dict[str, float] = {}
    for base in bases:
        row[base] = next(it)
        if with_stats:
            for suffix in ("mean", "max", "min", "std"):
                row[f"{base}/{suffix}"] = next(it) if suffix != "std" else abs(next(it))
    expected = format_compact_summary(row, precision=precision)
    formatter = SummaryFormatter(precision)
    assert formatter.format(row, plain_numbers=plain) == expected
    # again, from the cached layout
    assert formatter.format(row, plain_numbers=plain) == expected


# Stds inside format_std's fixed-point range, the band edges and their neighbours included.
_EDGES = [0.00995, 0.0995, 0.995, 9.95]
FIXED_STD = st.floats(min_value=0.00995, max_value=99.5, exclude_max=True) | st.sampled_from(
    [e for b in _EDGES for e in (b, math.nextafter(b, 0.0), math.nextafter(b, 1.0))]
    + [math.nextafter(99.5, 0.0)]
).filter(lambda s: 0.00995 <= s < 99.5)


@settings(max_examples=300, deadline=None)
@given(
    bases=st.lists(st.sampled_from(BASES), min_size=1, max_size=6, unique=True),
    means=st.lists(MODERATE, min_size=6, max_size=6),
    stds=st.lists(FIXED_STD, min_size=6, max_size=6),
    precision=st.integers(0, 8),
)
def test_fixed_point_stds_match_the_general_renderer(bases, means, stds, precision):
    """Lines whose stds all print in fixed point (the one-template std path) match format_std."""
    row: dict[str, float] = {}
    for base, mean, std in zip(bases, means, stds, strict=False):
        row[base] = mean
        row[f"{base}/mean"] = mean
        row[f"{base}/std"] = std
    expected = format_compact_summary(row, precision=precision)
    formatter = SummaryFormatter(precision)
    assert formatter.format(row, plain_numbers=True) == expected
    assert formatter.format(row, plain_numbers=True) == expected
