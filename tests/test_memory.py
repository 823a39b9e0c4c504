"""Device memory probes (ezpz.memory.get_memory_metrics)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from ezpz import memory
from ezpz.memory import MEMORY_KEYS, get_memory_metrics, last_device_total_gib

GIB = 1024**3


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(memory, "_total_bytes", {})
    monkeypatch.setattr(memory, "_last_total_gib", None)
    monkeypatch.setattr(memory, "_warned_failures", set())
    monkeypatch.delenv("EZPZ_TRACK_MEMORY", raising=False)


class FakeAllocator:
    """Stands in for torch.cuda on a machine without a GPU: the allocator
    counters and device properties get_memory_metrics reads."""

    def __init__(self) -> None:
        self.property_calls = 0
        self.stats = {
            "allocated_bytes.all.current": 1 * GIB,
            "allocated_bytes.all.peak": 3 * GIB,
            "reserved_bytes.all.current": 2 * GIB,
            "reserved_bytes.all.peak": 4 * GIB,
        }

    def current_device(self) -> int:
        return 0

    def memory_stats(self, index):
        return dict(self.stats)

    def get_device_properties(self, index):
        self.property_calls += 1
        return type("Props", (), {"total_memory": 80 * GIB})()


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeAllocator()
    monkeypatch.setattr(
        memory, "_accelerator_module", lambda kind: fake if kind in ("cuda", "xpu") else None
    )
    return fake


@pytest.mark.parametrize("device", ["cpu", "mps", None, "cpu:0"])
def test_cpu_and_mps_give_nothing(device):
    assert get_memory_metrics(device) == {}
    assert get_memory_metrics(device, prefix="train/") == {}


def test_torch_cpu_device_gives_nothing():
    torch = pytest.importorskip("torch")
    assert get_memory_metrics(torch.device("cpu")) == {}
    if not torch.cuda.is_available():
        # asking for CUDA where there is none is not an error either
        assert get_memory_metrics("cuda") == {}


def test_four_keys_in_gib_with_prefix(fake_cuda):
    got = get_memory_metrics("cuda:0", prefix="train/")
    assert got == {
        "train/mem_alloc": 1.0,
        "train/mem_peak_alloc": 3.0,
        "train/mem_reserved": 2.0,
        "train/mem_peak_reserved": 4.0,
    }
    assert tuple(get_memory_metrics("xpu")) == MEMORY_KEYS


def test_values_follow_the_allocator(fake_cuda):
    fake_cuda.stats["allocated_bytes.all.current"] = GIB // 2
    assert get_memory_metrics("cuda")["mem_alloc"] == 0.5


def test_device_total_is_queried_once_and_exposed(fake_cuda):
    assert last_device_total_gib() is None
    for _ in range(5):
        get_memory_metrics("cuda:0")
    assert fake_cuda.property_calls == 1
    assert last_device_total_gib() == 80.0


@pytest.mark.parametrize("value", ["0", "false", "off", " NO "])
def test_env_switch_turns_it_off(fake_cuda, monkeypatch, value):
    monkeypatch.setenv("EZPZ_TRACK_MEMORY", value)
    assert get_memory_metrics("cuda") == {}
    monkeypatch.setenv("EZPZ_TRACK_MEMORY", "1")
    assert len(get_memory_metrics("cuda")) == 4


def test_a_failing_probe_returns_nothing_and_warns_once(fake_cuda, caplog):
    def broken(index):
        raise RuntimeError("driver went away")

    fake_cuda.memory_stats = broken
    fake_cuda.memory_allocated = broken
    with caplog.at_level(logging.WARNING, logger="ezpz.memory"):
        assert get_memory_metrics("cuda") == {}
        assert get_memory_metrics("cuda") == {}
    assert caplog.text.count("driver went away") == 1


def test_no_torch_import_for_cpu_or_the_total():
    code = (
        "import sys, ezpz, ezpz.memory as m\n"
        "assert m.last_device_total_gib() is None\n"
        "assert ezpz.get_memory_metrics('cpu') == {}\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_real_cuda_memory_moves_with_an_allocation():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (benchmarks/gpu_check.py covers this on the GPU machine)")
    before = get_memory_metrics("cuda")["mem_alloc"]
    block = torch.empty(GIB // 4, dtype=torch.uint8, device="cuda")
    after = get_memory_metrics("cuda")["mem_alloc"]
    assert after - before == pytest.approx(0.25, abs=0.01)
    assert last_device_total_gib() == pytest.approx(
        torch.cuda.get_device_properties(0).total_memory / GIB
    )
    del block
