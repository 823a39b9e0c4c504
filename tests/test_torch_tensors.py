"""Torch tensors passed to History.update: converted together, never kept."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="tensor metrics need torch")
from torch.overrides import TorchFunctionMode  # noqa: E402

import ezpz  # noqa: E402

# Tensor operations that move a value to the host, one sync each on a GPU.
HOST_PULLS = {"item", "tolist", "cpu", "__float__", "__int__", "__bool__", "__index__"}


class CallLog(TorchFunctionMode):
    """Records the name of every torch function / Tensor method called."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def history(tmp_path):
    h = ezpz.History(backends="none", report_dir=tmp_path, distributed_history=False)
    yield h
    h.close()


def test_values_of_tensor_metrics(history):
    history.update(
        {
            "train/loss": torch.tensor(0.25),
            "train/one": torch.tensor([3.0]),
            "train/count": torch.tensor(7, dtype=torch.int64),
            "train/half": torch.tensor(1.5, dtype=torch.bfloat16),
            "train/flag": torch.tensor(True),
        },
        step=0,
    )
    got = history.history
    assert got["train/loss"].tolist() == [0.25]
    assert got["train/one"].tolist() == [3.0]
    assert got["train/count"].tolist() == [7.0]
    assert got["train/half"].tolist() == [1.5]
    assert got["train/flag"].tolist() == [1.0]


def test_one_host_copy_per_update_not_one_per_metric(history):
    metrics = {f"train/m{i}": torch.tensor(float(i)) * 2 for i in range(12)}
    history.update(metrics, step=0)  # first call builds the layout
    with CallLog() as log:
        history.update(metrics, step=1)
    pulls = [n for n in log.names if n in HOST_PULLS]
    assert pulls == ["cpu"], pulls  # one batched copy; no .item() per metric
    np.testing.assert_array_equal(
        [history.history[f"train/m{i}"][-1] for i in range(12)], [2.0 * i for i in range(12)]
    )


def test_no_reference_to_the_callers_tensor_or_graph(history):
    weight = torch.ones(8, requires_grad=True)
    hidden = weight * 3
    loss = hidden.sum()
    refs = [weakref.ref(loss), weakref.ref(hidden)]
    history.update({"train/loss": loss, "train/vec": hidden}, step=0)
    assert loss.requires_grad and loss.grad_fn is not None  # caller's tensor unchanged
    loss.backward()  # the graph is still usable by the caller
    assert weight.grad is not None and weight.grad.tolist() == [3.0] * 8
    del loss, hidden
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert history.history["train/loss"].tolist() == [24.0]


def test_later_changes_to_the_tensor_do_not_change_the_record(history):
    t = torch.tensor(1.0)
    history.update({"x": t}, step=0)
    t.add_(41.0)  # in-place change after update
    history.update({"x": t}, step=1)
    assert history.history["x"].tolist() == [1.0, 42.0]


def test_cuda_tensors_one_sync():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (benchmarks/gpu_check.py counts syncs on the GPU machine)")
    import warnings

    h = ezpz.History(backends="none", report_dir="/tmp/ezpz-test-cuda", distributed_history=False)
    x = torch.randn(256, 256, device="cuda")
    metrics = {f"m{i}": (x @ x)[i, i] for i in range(8)}
    h.update(metrics, step=0)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            h.update(metrics, step=1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert sum("synchroniz" in str(w.message).lower() for w in caught) == 1
    h.close()
