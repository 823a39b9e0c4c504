"""The console summary line (docs/console-summary.md): format_compact_summary and SummaryFormatter."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import ezpz.history.summary as summary
from ezpz.utils import SummaryFormatter, format_compact_summary, format_std, format_value

SPEC_LINE = (
    "iter=180 loss=0.078(± 0.026) accuracy=0.984(±9.9e-3) dtf=0.014(±7.4e-4) "
    "lr=0.000059 memory=0.01/0.01GiB (0%)"
)
SPEC_INPUT = {
    "iter": 180,
    "loss": 0.078,
    "loss/std": 0.026,
    "accuracy": 0.984,
    "accuracy/std": 0.0099,
    "dtf": 0.014,
    "dtf/std": 0.00074,
    "lr": 0.000059,
    "mem_alloc": 0.01,
    "mem_peak_alloc": 0.01,
    "mem_reserved": 0.01,
    "mem_peak_reserved": 0.01,
}


@pytest.fixture
def device_total(monkeypatch: pytest.MonkeyPatch):
    """Pretend ezpz.memory has probed an 80 GiB device (the real module, its public probe)."""
    import ezpz.memory

    monkeypatch.setattr(ezpz.memory, "last_device_total_gib", lambda: 80.0)
    return 80.0


def _with_stats(raw: dict[str, float], rank_values: dict[str, list[float]]) -> dict[str, float]:
    """What History passes in a distributed run: raw values, then the statistics."""
    out = dict(raw)
    for key, values in rank_values.items():
        arr = np.asarray(values, dtype=np.float64)
        out[f"{key}/mean"] = float(arr.mean())
        out[f"{key}/max"] = float(arr.max())
        out[f"{key}/min"] = float(arr.min())
        out[f"{key}/std"] = float(arr.std())
    return out


# -- whole lines -----------------------------------------------------------
def test_spec_example_line_exactly(device_total):
    assert format_compact_summary(SPEC_INPUT, precision=3) == SPEC_LINE
    assert SummaryFormatter(precision=3).format(SPEC_INPUT) == SPEC_LINE


def test_seed_example_default_precision():
    assert format_compact_summary({"loss": 0.42}) == "loss=0.420000"
    assert SummaryFormatter().format({"loss": 0.42}) == "loss=0.420000"


@pytest.mark.parametrize(
    ("metrics", "precision", "expected"),
    [
        ({"loss": 0.42, "lr": 1e-3}, 6, "loss=0.420000 lr=0.001000"),
        ({"step": 42, "loss": 0.42}, 2, "step=42  loss=0.42"),
        ({"loss": 0.5, "loss/std": 0.12}, 3, "loss=0.500(±  0.12)"),
        ({"loss": 0.5, "loss/std": 0.07}, 3, "loss=0.500(± 0.070)"),
        ({"loss": 0.5, "loss/std": 5.1e-4}, 3, "loss=0.500(±5.1e-4)"),
        ({"train/iter": 7, "train/loss": 1.0}, 1, "train/iter=7   train/loss=1.0"),
        (
            {"epoch": 2, "batch": 31, "idx": 1000, "x": 0.0},
            1,
            "epoch=2   batch=31  idx=1000   x=0.0",
        ),
        # a hyperparameter with a std sibling stays bare and unpadded
        ({"lr": 0.001, "lr/std": 0.0, "momentum": 0.9}, 3, "lr=0.001 momentum=0.900"),
        # statistics of a key that is not there are ordinary metrics
        ({"grad/max": 3.0, "grad/min": 1.0}, 1, "grad/max=3.0 grad/min=1.0"),
        ({"loss": math.nan, "loss/std": math.nan}, 2, "loss=nan(±   nan)"),
        ({"loss": -math.inf, "loss/std": math.inf}, 2, "loss=-inf(±   inf)"),
        ({"x": -0.25, "x/std": 0.0}, 2, "x=-0.25(±     0)"),
        ({"mem_alloc": 1.5, "mem_reserved": 2.25}, 6, "memory=1.50/2.25GiB"),
        ({"train/mem_alloc": 1.0, "train/loss": 0.1}, 1, "train/memory=1.00/?GiB train/loss=0.1"),
        ({}, 6, ""),
    ],
)
def test_lines(metrics, precision, expected):
    assert format_compact_summary(metrics, precision=precision) == expected
    assert SummaryFormatter(precision).format(metrics) == expected


def test_distributed_input_shows_mean_and_is_identical_on_every_rank(device_total):
    """Each rank passes its own raw values plus the shared statistics: same line."""
    ranks = {
        "iter": [180, 180],
        "loss": [0.052, 0.104],
        "accuracy": [0.9939, 0.9741],
        "dtf": [0.01326, 0.01474],
        "lr": [0.000059, 0.000059],
        "mem_alloc": [0.01, 0.01],
        "mem_peak_alloc": [0.01, 0.01],
        "mem_reserved": [0.01, 0.01],
        "mem_peak_reserved": [0.01, 0.01],
    }
    lines = set()
    for rank in range(2):
        raw = {key: values[rank] for key, values in ranks.items()}
        lines.add(SummaryFormatter(precision=3).format(_with_stats(raw, ranks)))
        lines.add(format_compact_summary(_with_stats(raw, ranks), precision=3))
    assert lines == {SPEC_LINE}


def test_companions_never_reach_the_console():
    metrics = _with_stats({"loss": 1.0, "acc": 0.5}, {"loss": [1.0, 3.0], "acc": [0.5, 0.5]})
    metrics["loss/avg"] = 2.0
    metrics["loss/count"] = 2.0
    line = format_compact_summary(metrics, precision=2)
    assert line == "loss=2.00(±   1.0) acc=0.50(±     0)"
    for suffix in ("mean", "max", "min", "std", "avg", "count"):
        assert f"/{suffix}" not in line


def test_peak_percent_uses_the_worst_rank(device_total):
    metrics = _with_stats(
        {"mem_alloc": 8.0, "mem_peak_alloc": 8.0, "mem_reserved": 10.0, "mem_peak_reserved": 10.0},
        {
            "mem_alloc": [8.0, 12.0],
            "mem_peak_alloc": [8.0, 40.0],
            "mem_reserved": [10.0, 14.0],
            "mem_peak_reserved": [10.0, 44.0],
        },
    )
    assert format_compact_summary(metrics) == "memory=10.00/12.00GiB (50%)"


def test_memory_token_with_prefix_keeps_its_place(device_total):
    metrics = {
        "train/iter": 3,
        "train/mem_alloc": 1.0,
        "train/loss": 0.25,
        "train/mem_peak_alloc": 20.0,
        "train/mem_reserved": 2.0,
        "train/mem_peak_reserved": 30.0,
    }
    assert format_compact_summary(metrics, precision=2) == (
        "train/iter=3   train/memory=1.00/2.00GiB (25%) train/loss=0.25"
    )


def test_peak_percent_omitted_when_total_unknown(monkeypatch: pytest.MonkeyPatch):
    import ezpz.memory

    monkeypatch.setattr(ezpz.memory, "last_device_total_gib", lambda: None)
    line = format_compact_summary(SPEC_INPUT, precision=3)
    assert line.endswith("lr=0.000059 memory=0.01/0.01GiB")

    def broken() -> float:
        raise RuntimeError("probe failed")

    monkeypatch.setattr(ezpz.memory, "last_device_total_gib", broken)
    assert format_compact_summary(SPEC_INPUT, precision=3) == line
    monkeypatch.delitem(sys.modules, "ezpz.memory")
    assert format_compact_summary(SPEC_INPUT, precision=3) == line


def test_summary_never_imports_torch_or_memory():
    code = (
        "import sys, ezpz\n"
        "from ezpz.utils import format_compact_summary, SummaryFormatter\n"
        "m = {'mem_alloc': 1.0, 'mem_peak_alloc': 2.0, 'mem_reserved': 3.0, 'loss': 1.0}\n"
        "print(format_compact_summary(m), SummaryFormatter().format(m))\n"
        "bad = [n for n in ('torch', 'ezpz.memory') if n in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "memory=1.00/3.00GiB loss=1.000000" in proc.stdout


# -- numbers ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("std", "text"),
    [
        (0.16, "0.16"),
        (0.020, "0.020"),
        (0.026, "0.026"),
        (0.070, "0.070"),
        (0.12, "0.12"),
        (1.3, "1.3"),
        (12.0, "12"),
        (5.1e-4, "5.1e-4"),
        (9.9e-3, "9.9e-3"),
        (7.4e-4, "7.4e-4"),
        (0.00999, "0.010"),  # rounds up into the fixed-point range
        (0.0995, "0.10"),
        (9.96, "10"),
        (99.7, "1.0e+2"),  # rounds up out of it
        (1234.0, "1.2e+3"),
        (0.0, "0"),
        (-0.0, "0"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (1e300, "1.0e+300"),
        (1e-300, "1.0e-300"),
        (5e-324, "4.9e-324"),
        (-0.16, "-0.16"),
        (-5.1e-4, "-5.1e-4"),
    ],
)
def test_format_std(std, text):
    assert format_std(std) == text


@pytest.mark.parametrize(
    ("value", "precision", "text"),
    [
        (0.42, 6, "0.420000"),
        (0.078, 3, "0.078"),
        (0.000059, 3, "0.000059"),  # would round to 0: 2 significant figures
        (0.000059, 6, "0.000059"),
        (-0.00004, 2, "-0.000040"),
        (0.0005, 3, "0.001"),
        (1e-300, 6, "1.0e-300"),
        (12345.678, 2, "12345.68"),
        (1e14, 1, "100000000000000.0"),
        (1e15, 3, "1.000e+15"),
        (-1e300, 2, "-1.00e+300"),
        (0.0, 3, "0.000"),
        (-0.0, 3, "0.000"),
        (math.nan, 3, "nan"),
        (math.inf, 3, "inf"),
        (-math.inf, 3, "-inf"),
        (3.0, 0, "3"),
    ],
)
def test_format_value(value, precision, text):
    assert format_value(value, precision) == text


def test_huge_values_stay_short():
    metrics = {"iter": 1e300, "loss": 1e300, "loss/std": 1e300, "lr": -1e308, "mem_alloc": 1e300}
    line = format_compact_summary(metrics)
    assert max(len(token) for token in line.split()) < 40, line
    assert "loss=1.000000e+300(±1.0e+300)" in line


def test_counters_print_as_integers():
    assert format_compact_summary({"iter": 180.0}) == "iter=180"
    assert format_compact_summary({"iter": np.int64(7), "iter/mean": 7.000000000000001}) == "iter=7"
    # ranks disagreeing on a counter show it: the mean is not integral
    assert format_compact_summary({"step": 3, "step/mean": 3.5}, precision=1) == "step=3.5"


# -- alignment ---------------------------------------------------------------
def test_counter_column_aligns_across_rows():
    formatter = SummaryFormatter(precision=3)
    rows = [{"iter": i, "loss": 0.5, "loss/std": 0.01} for i in (8, 80, 180, 999)]
    lines = [formatter.format(r) for r in rows]
    assert len({line.index("loss=") for line in lines}) == 1, lines
    assert lines[0].startswith("iter=8   loss=")
    stateless = [format_compact_summary(r, precision=3) for r in rows]
    assert stateless == lines


def test_counter_column_grows_once_and_never_shrinks():
    formatter = SummaryFormatter(precision=1)
    first = formatter.format({"iter": 999, "x": 1.0})
    wide = formatter.format({"iter": 1000, "x": 1.0})
    back = formatter.format({"iter": 5, "x": 1.0})
    assert first.index("x=") == len("iter=999 ")
    assert wide.index("x=") == back.index("x=") == len("iter=1000   ")


def test_std_column_aligns():
    rows = [0.070, 5.1e-4, 0.12, 0.0, 1.3, 12.0, 9.9e-3]
    lines = [format_compact_summary({"loss": 0.5, "loss/std": s}, precision=3) for s in rows]
    assert len({len(line) for line in lines}) == 1, lines
    assert len({line.index("±") for line in lines}) == 1


# -- values of any type --------------------------------------------------------
def test_any_values_never_raise():
    metrics = {
        "a": np.array([1.5]),
        "b": np.float32(2.0),
        "c": None,
        "phase": "warmup",
        "d": [1, 2],
        "chains": np.arange(3.0),
        "big": 10**400,
        "flag": True,
        "zero_d": np.array(3.0),
        "z": 1 + 2j,
        "iter": np.int64(7),
        "loss": 0.5,
        "loss/std": "n/a",
    }
    expected = (
        "a=1.500000 b=2.000000 phase=warmup big=inf flag=1.000000 zero_d=3.000000 "
        "iter=7   loss=0.500000"
    )
    assert format_compact_summary(metrics) == expected
    assert SummaryFormatter().format(metrics) == expected


def test_formatter_recovers_when_a_value_turns_into_a_vector():
    formatter = SummaryFormatter(precision=2)
    assert formatter.format({"x": 1.0, "y": 2.0}) == "x=1.00 y=2.00"
    assert formatter.format({"x": np.ones(4), "y": 2.0}) == "y=2.00"
    assert formatter.format({"x": 3.0, "y": 2.0}) == "x=3.00 y=2.00"


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="precision"):
        format_compact_summary({"x": 1.0}, precision=-1)
    with pytest.raises(TypeError, match="precision"):
        SummaryFormatter(precision="3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping"):
        format_compact_summary([("x", 1.0)])  # type: ignore[arg-type]


# -- the cached layout -----------------------------------------------------------
def test_layout_is_built_only_when_keys_change(monkeypatch: pytest.MonkeyPatch):
    builds: list[tuple[str, ...]] = []
    real = summary._build_layout

    def counting(keys):
        builds.append(keys)
        return real(keys)

    monkeypatch.setattr(summary, "_build_layout", counting)
    formatter = SummaryFormatter(precision=2)
    for step in range(50):
        formatter.format({"iter": step, "loss": 1.0 / (step + 1), "loss/std": 0.1})
    assert len(builds) == 1
    assert formatter.format({"iter": 50, "acc": 0.5}) == "iter=50  acc=0.50"
    assert len(builds) == 2


def test_precision_can_change_per_call():
    formatter = SummaryFormatter()
    assert formatter.format({"x": 0.5}) == "x=0.500000"
    assert formatter.format({"x": 0.5}, 2) == "x=0.50"
    assert formatter.format({"x": 0.5}, precision=4) == "x=0.5000"


# -- through History -------------------------------------------------------------
def test_history_update_returns_the_aligned_line(tmp_path):
    from ezpz.history import History

    history = History(backends="none", report_dir=tmp_path, distributed_history=False)
    lines = [
        history.update({"iter": i, "loss": 0.078, "lr": 0.000059}, step=i, precision=3)
        for i in (8, 180)
    ]
    assert lines == ["iter=8   loss=0.078 lr=0.000059", "iter=180 loss=0.078 lr=0.000059"]
