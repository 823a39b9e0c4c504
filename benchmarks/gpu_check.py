"""GPU check for the training-loop integration (memory, tensor syncs, FLOPs/MFU, nccl).

Run on a machine with a CUDA GPU::

    python benchmarks/gpu_check.py > benchmarks/results/gpu_check.txt

Each check prints PASS/FAIL lines and its numbers; the exit code is the
number of failed checks. Without CUDA every check says why it is skipped
and the CPU paths that exist still run (so this script is tested on CPU).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import tempfile
import time
import warnings
import weakref

import torch

import ezpz
from ezpz.flops import compute_mfu, device_name, peak_flops, try_estimate
from ezpz.memory import get_memory_metrics, last_device_total_gib

FAILURES: list[str] = []
HAS_CUDA = torch.cuda.is_available()
N_METRICS = 16


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        FAILURES.append(name)


def skip(name: str, why: str) -> None:
    print(f"SKIP {name}: {why}", flush=True)


def header() -> None:
    print(f"torch {torch.__version__}, ezpz {ezpz.__version__}, python {sys.version.split()[0]}")
    if HAS_CUDA:
        props = torch.cuda.get_device_properties(0)
        print(
            f"device: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
            f"{props.multi_processor_count} SMs"
        )
    else:
        print("device: no CUDA; GPU-only checks are skipped")


def check_memory() -> None:
    if not HAS_CUDA:
        check("memory: {} on CPU", get_memory_metrics("cpu") == {})
        return
    dev = torch.device("cuda", 0)
    before = get_memory_metrics(dev, prefix="train/")
    check(
        "memory: four prefixed keys",
        sorted(before)
        == sorted(
            f"train/{k}"
            for k in ("mem_alloc", "mem_peak_alloc", "mem_reserved", "mem_peak_reserved")
        ),
        str(sorted(before)),
    )
    block = torch.empty(2**30, dtype=torch.uint8, device=dev)  # exactly 1 GiB
    after = get_memory_metrics(dev, prefix="train/")
    grew = after["train/mem_alloc"] - before["train/mem_alloc"]
    check("memory: mem_alloc grows by 1 GiB", abs(grew - 1.0) < 0.01, f"+{grew:.4f} GiB")
    check(
        "memory: peak >= current",
        after["train/mem_peak_alloc"] >= after["train/mem_alloc"]
        and after["train/mem_peak_reserved"] >= after["train/mem_reserved"],
        f"{after}",
    )
    total = last_device_total_gib()
    check(
        "memory: device total cached",
        total is not None
        and abs(total - torch.cuda.get_device_properties(0).total_memory / 2**30) < 1e-6,
        f"{total:.2f} GiB",
    )
    del block
    freed = get_memory_metrics(dev)["mem_alloc"]
    check("memory: mem_alloc falls after free", freed < after["train/mem_alloc"] - 0.99)
    os.environ["EZPZ_TRACK_MEMORY"] = "0"
    check("memory: EZPZ_TRACK_MEMORY=0 gives {}", get_memory_metrics(dev) == {})
    del os.environ["EZPZ_TRACK_MEMORY"]
    t0 = time.perf_counter()
    for _ in range(1000):
        get_memory_metrics(dev)
    print(f"  get_memory_metrics: {(time.perf_counter() - t0) * 1e3:.3f} us per call")


def _step_metrics(x: torch.Tensor) -> dict[str, torch.Tensor]:
    # GPU work queued before the metrics, as in a training step.
    y = x @ x
    return {f"train/m{i}": y[i, i] * (i + 1) for i in range(N_METRICS)}


def _count_syncs(fn) -> tuple[int, float]:
    """(number of synchronising ops warned by torch, seconds) for one call of fn."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        t0 = time.perf_counter()
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        dt = time.perf_counter() - t0
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    return len(syncs), dt


def _profile_copies(fn) -> dict[str, int]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    counts = {"DtoH memcpy": 0, "cudaMemcpyAsync": 0, "cudaStreamSynchronize": 0, "aten::item": 0}
    for event in prof.events():
        name = event.name
        if "Memcpy DtoH" in name:
            counts["DtoH memcpy"] += 1
        elif name in counts:
            counts[name] += 1
    return counts


def _dtoh(counts: dict[str, int]) -> int:
    # device-side memcpy records when the profiler has them, else runtime calls
    return counts["DtoH memcpy"] or counts["cudaMemcpyAsync"]


def check_tensor_syncs() -> None:
    history = ezpz.History(backends="none", report_dir=tempfile.mkdtemp(prefix="gpu_check_"))
    # CPU-independent part: no reference kept to the caller's tensor or its graph.
    device = torch.device("cuda", 0) if HAS_CUDA else torch.device("cpu")
    w = torch.ones(4, device=device, requires_grad=True)
    loss = (w * 2).sum()
    ref = weakref.ref(loss)
    history.update({"train/loss": loss}, step=0)
    del loss
    check("tensors: caller's tensor not kept", ref() is None)
    if not HAS_CUDA:
        skip("tensors: sync count", "needs CUDA")
        return
    x = torch.randn(2048, 2048, device=device)

    def naive() -> None:
        {k: v.item() for k, v in _step_metrics(x).items()}

    def through_history() -> None:
        history.update(_step_metrics(x), step=1)

    naive(), through_history()  # warm-up (kernels, layout)
    n_naive, _ = _count_syncs(naive)
    n_hist, _ = _count_syncs(through_history)
    print(
        f"  sync-debug warnings for {N_METRICS} tensor metrics: .item() each={n_naive}, "
        f"history.update={n_hist}"
    )
    check("tensors: one sync per update (sync debug mode)", n_hist == 1, f"{n_hist}")
    prof_naive = _profile_copies(naive)
    prof_hist = _profile_copies(through_history)
    print(f"  profiler, .item() each: {prof_naive}")
    print(f"  profiler, history.update: {prof_hist}")
    check(
        "tensors: one DtoH copy per update (profiler)",
        _dtoh(prof_hist) == 1,
        f"{_dtoh(prof_hist)} vs {_dtoh(prof_naive)} with .item()",
    )
    values = history.history
    expected = float((x @ x)[3, 3] * 4)
    got = float(values["train/m3"][-1])
    check("tensors: values correct", abs(got - expected) <= 1e-4 * max(1.0, abs(expected)))
    # Per-step overhead, GPU busy with the same queued work in both loops.
    reps = 50
    for label, fn in (("item() each", naive), ("history.update", through_history)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        print(f"  {label}: {(time.perf_counter() - t0) / reps * 1e3:.3f} ms per step")
    history.close()


def check_flops_mfu() -> None:
    print(f"  device_name()={device_name()!r} peak bf16={peak_flops()}")
    if not HAS_CUDA:
        model = torch.nn.Linear(256, 256, bias=False)
        flops = try_estimate(model, (256, 256), backward=False)
        check("flops: CPU matmul count", flops == 2 * 256**3, f"{flops}")
        check("mfu: 0.0 on CPU", compute_mfu(flops, 0.01) == 0.0)
        return
    n = 8192
    model = torch.nn.Linear(n, n, bias=False, device="cuda", dtype=torch.bfloat16)
    flops = try_estimate(model, (n, n), backward=False)
    check("flops: bf16 matmul count = 2n^3", flops == 2 * n**3, f"{flops:.4e}")
    train_flops = try_estimate(model, (n, n))
    check("flops: fwd+bwd = 2x fwd (no input grad)", train_flops == 2 * flops, f"{train_flops}")
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        reps = 20
        start.record()
        for _ in range(reps):
            model(x)
        end.record()
        end.synchronize()
    dt = start.elapsed_time(end) / 1e3 / reps
    mfu = compute_mfu(flops, dt)
    print(
        f"  bf16 {n}^3 matmul: {dt * 1e3:.3f} ms, {flops / dt / 1e12:.1f} TFLOP/s, MFU {mfu:.1f}%"
    )
    check("mfu: plausible (20..100%)", 20.0 <= mfu <= 100.0, f"{mfu:.1f}%")


def check_setup_torch() -> None:
    import torch.distributed as dist

    rank = ezpz.setup_torch(seed=0)
    backend = dist.get_backend()
    device = ezpz.get_torch_device()
    t = torch.ones(4, device=device)
    dist.all_reduce(t)
    check(
        "setup_torch: single rank",
        rank == 0 and dist.get_world_size() == 1 and float(t.sum()) == 4.0,
        f"backend={backend} device={device}",
    )
    if HAS_CUDA:
        check("setup_torch: nccl on CUDA", backend == "nccl", backend)
    check("setup_torch: idempotent", ezpz.setup_torch() == rank)
    ezpz.cleanup()
    check("cleanup: process group gone", not dist.is_initialized())


def check_example() -> None:
    """The example job on one GPU: memory token and MFU in the console line."""
    import subprocess

    if not HAS_CUDA:
        skip("example on GPU", "needs CUDA (the CPU run is tested in tests/mpi)")
        return
    outdir = tempfile.mkdtemp(prefix="gpu_check_train_")
    cmd = [
        sys.executable, "-m", "ezpz.examples.train", "--steps", "60", "--eval-every", "30",
        "--log-every", "20", "--batch-size", "8192", "--hidden", "4096", "--depth", "4",
        "--features", "1024", "--dtype", "bf16", "--backends", "none", "--outdir", outdir,
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired:
        check("example on GPU: finished", False, "timed out after 150 s")
        return
    lines = (out.stdout + out.stderr).splitlines()
    for line in lines:
        if "train/iter=" in line or "finalize: done" in line or "Error" in line:
            print("  " + line[-400:])
    check("example on GPU: finished", out.returncode == 0, f"rc={out.returncode}")
    summaries = [line for line in lines if "train/iter=" in line]
    check(
        "example on GPU: memory token and mfu in the summary",
        bool(summaries) and "memory=" in summaries[-1] and "mfu=" in summaries[-1],
    )
    check("example on GPU: outputs", os.path.exists(os.path.join(outdir, "train.h5")))


def main() -> int:
    faulthandler.dump_traceback_later(240, exit=True)  # never hang the device run
    header()
    for name, fn in (
        ("memory", check_memory),
        ("tensor syncs", check_tensor_syncs),
        ("flops/mfu", check_flops_mfu),
        ("setup_torch", check_setup_torch),
        ("example", check_example),
    ):
        print(f"== {name}", flush=True)
        try:
            fn()
        except Exception as exc:  # report and go on to the next check
            check(f"{name}: raised", False, repr(exc))
    print(f"== {len(FAILURES)} failed: {FAILURES}" if FAILURES else "== all checks passed")
    return len(FAILURES)


if __name__ == "__main__":
    sys.exit(main())
