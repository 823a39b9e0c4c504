"""Value rules of docs/history.md ("Value rules"): what update() records, flattens or skips."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ezpz.history.normalize import Normalizer


def norm(metrics):
    out = Normalizer()(metrics)
    return dict(zip(out.scalar_keys, out.scalar_values, strict=True)), dict(out.vectors)


def test_python_and_numpy_scalars_become_floats():
    scalars, vectors = norm(
        {
            "f": 0.5,
            "i": 3,
            "b": True,
            "nf": np.float32(1.5),
            "ni": np.int64(7),
            "nb": np.bool_(False),
        }
    )
    assert scalars == {"f": 0.5, "i": 3.0, "b": 1.0, "nf": 1.5, "ni": 7.0, "nb": 0.0}
    assert all(type(v) is float for v in scalars.values())
    assert vectors == {}


def test_zero_d_and_one_element_arrays_are_scalars():
    scalars, vectors = norm({"a": np.array(2.5), "b": np.array([4.0])})
    assert scalars == {"a": 2.5, "b": 4.0}
    assert vectors == {}


def test_one_d_arrays_and_lists_are_vectors():
    scalars, vectors = norm({"chains": np.arange(4), "lst": [1, 2.5], "tup": (3.0, 4.0)})
    assert scalars == {}
    np.testing.assert_array_equal(vectors["chains"], [0, 1, 2, 3])
    np.testing.assert_array_equal(vectors["lst"], [1.0, 2.5])
    assert vectors["chains"].dtype == np.float64


def test_nested_dicts_flatten_with_slashes():
    scalars, _ = norm({"train": {"loss": 1.0, "opt": {"lr": 0.1}}, "x": 2})
    assert scalars == {"train/loss": 1.0, "train/opt/lr": 0.1, "x": 2.0}


def test_nonfinite_values_are_kept():
    scalars, _ = norm({"a": float("nan"), "b": float("inf"), "c": -np.inf})
    assert np.isnan(scalars["a"]) and scalars["b"] == np.inf and scalars["c"] == -np.inf


def test_unsupported_values_skipped_with_one_warning_per_key(caplog):
    n = Normalizer()
    with caplog.at_level(logging.WARNING, logger="ezpz.history.normalize"):
        for _ in range(3):
            out = n(
                {
                    "none": None,
                    "s": "text",
                    "obj": object(),
                    "ok": 1.0,
                    "e": [],
                    "c": np.array(["a"]),
                }
            )
    assert out.scalar_keys == ["ok"]
    warned = [r.getMessage() for r in caplog.records]
    for key in ("none", "s", "obj", "e", "c"):
        assert sum(f"'{key}'" in m for m in warned) == 1, warned


def test_huge_python_int_is_recorded_as_inf_not_raised(caplog):
    # Integers of any size are recorded as float64 (issue 12 item 1): beyond
    # float64's range that is the IEEE overflow value, with one warning.
    with caplog.at_level(logging.WARNING):
        scalars, _ = norm({"big": 10**400, "neg": -(10**400), "ok": 1})
    assert scalars == {"big": float("inf"), "neg": float("-inf"), "ok": 1.0}
    assert "beyond float64" in caplog.text


def test_torch_tensors_convert_in_one_batch():
    torch = pytest.importorskip("torch", reason="torch not installed")
    t_loss = torch.tensor(0.25, requires_grad=True) * 2
    scalars, vectors = norm(
        {"loss": t_loss, "one": torch.tensor([3]), "vec": torch.arange(3.0), "i": torch.tensor(5)}
    )
    assert scalars == {"loss": 0.5, "one": 3.0, "i": 5.0}
    np.testing.assert_array_equal(vectors["vec"], [0.0, 1.0, 2.0])
    assert vectors["vec"].base is None or not isinstance(vectors["vec"].base, torch.Tensor)


def test_torch_is_not_imported_for_plain_metrics():
    import subprocess
    import sys

    code = (
        "import sys; from ezpz.history.normalize import Normalizer;"
        "Normalizer()({'a': 1.0, 'b': [1, 2]}); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
