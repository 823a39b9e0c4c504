"""Model FLOPs per step and Model FLOPs Utilisation (MFU).

``try_estimate(model, input_shape)`` counts the FLOPs of one forward and
backward pass with torch's ``FlopCounterMode`` on a dummy batch.
``compute_mfu(flops, dt)`` divides the achieved FLOP/s by the peak dense
FLOP/s of the device (the table below) and returns a percentage.

Usage::

    from ezpz.flops import compute_mfu, try_estimate

    step_flops = try_estimate(model, input_shape=(batch, features))  # once
    # a model called as model(X, Y) that returns its loss (nanoGPT):
    step_flops = try_estimate(model, example_input=(X, Y))
    ...
    history.update({"mfu": compute_mfu(step_flops, dt)})             # every step

On CPU (or an accelerator not in the table) ``compute_mfu`` returns 0.0:
pass the peak yourself, ``compute_mfu(step_flops, dt, peak=2.0e12)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "PEAK_FLOPS_TABLE",
    "PeakFlops",
    "compute_mfu",
    "device_name",
    "lookup_peak",
    "peak_flops",
    "try_estimate",
]


@dataclass(frozen=True)
class PeakFlops:
    """Dense (no sparsity) peak FLOP/s of one device as torch enumerates it.

    ``match`` is a list of substrings that must all occur in the upper-cased
    device name. ``None`` for a dtype the device has no fast path for.
    """

    match: tuple[str, ...]
    bf16: float | None
    fp16: float | None
    fp32: float | None
    source: str


_NV_H100 = "NVIDIA H100 Tensor Core GPU datasheet (sparsity figures halved)"
_NV_H200 = "NVIDIA H200 Tensor Core GPU datasheet (sparsity figures halved)"

# Order matters: the first entry whose substrings all match wins, so
# variants come before the family name ("GH200" before "H200").
PEAK_FLOPS_TABLE: tuple[PeakFlops, ...] = (
    PeakFlops(("GH200",), 989e12, 989e12, 67e12, "NVIDIA GH200 Grace Hopper datasheet"),
    PeakFlops(("H100", "NVL"), 835e12, 835e12, 60e12, _NV_H100 + ", H100 NVL"),
    PeakFlops(("H100", "PCIE"), 756e12, 756e12, 51e12, _NV_H100 + ", H100 PCIe"),
    PeakFlops(("H100",), 989e12, 989e12, 67e12, _NV_H100 + ", H100 SXM"),
    PeakFlops(("H200", "NVL"), 835e12, 835e12, 60e12, _NV_H200 + ", H200 NVL"),
    PeakFlops(("H200",), 989e12, 989e12, 67e12, _NV_H200 + ", H200 SXM"),
    PeakFlops(("A100",), 312e12, 312e12, 19.5e12, "NVIDIA A100 Tensor Core GPU datasheet"),
    PeakFlops(("V100",), None, 125e12, 15.7e12, "NVIDIA V100 datasheet, SXM2 (no bf16)"),
    PeakFlops(
        ("MI300X",), 1307.4e12, 1307.4e12, 163.4e12, "AMD Instinct MI300X data sheet (dense)"
    ),
    PeakFlops(("MI300A",), 980.6e12, 980.6e12, 122.6e12, "AMD Instinct MI300A data sheet (dense)"),
    # ROCm enumerates each of an MI250(X)'s two GCDs as a device: half a package.
    PeakFlops(("MI250X",), 191.5e12, 191.5e12, 23.95e12, "AMD Instinct MI250X data sheet, per GCD"),
    PeakFlops(("MI250",), 181.0e12, 181.0e12, 22.6e12, "AMD Instinct MI250 data sheet, per GCD"),
    # 1024 XMX engines x 512 bf16 FLOP/clk x 1.6 GHz; fp32: 1024 vector
    # engines x 32 FLOP/clk x 1.6 GHz. Scaled by the compute units torch
    # reports, so one stack (Aurora's FLAT mode) gets half.
    PeakFlops(
        ("MAX", "1550"),
        838.9e12,
        838.9e12,
        52.4e12,
        "Intel Data Center GPU Max 1550 (Xe-HPC) architecture: 128 Xe cores at 1.6 GHz, per card",
    ),
)
_INTEL_MAX_1550_EUS = 1024  # vector engines (EUs) on a full two-stack card

_DTYPE_ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "torch.bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "torch.float16": "fp16",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "torch.float32": "fp32",
}

_warned_unknown: set[str] = set()


def lookup_peak(name: str) -> PeakFlops | None:
    """The table entry for a device name (e.g. "NVIDIA H100 80GB HBM3"), or None."""
    upper = name.upper()
    for entry in PEAK_FLOPS_TABLE:
        if all(token in upper for token in entry.match):
            return entry
    return None


def _device_kind(device: Any) -> str | None:
    if device is None:
        return None
    kind = getattr(device, "type", None)
    if kind is not None:
        return str(kind)
    text = str(device).lower()
    if text.split(":")[0] in ("cpu", "cuda", "xpu", "mps"):
        return text.split(":")[0]
    return None


def device_name(device: Any = None) -> str:
    """A human-readable accelerator name: torch's name for CUDA/ROCm/XPU, else "cpu".

    ``device`` may be a torch.device, "cuda:1", or None for the current one.
    A string that is not a device kind is taken as the name itself.
    """
    kind = _device_kind(device)
    if device is not None and kind is None:
        return str(device)
    if kind in ("cpu", "mps"):
        return kind
    import torch

    index = getattr(device, "index", None)
    if isinstance(device, str) and ":" in device:
        index = int(device.split(":")[1])
    if kind in (None, "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(index)
    xpu = getattr(torch, "xpu", None)
    if kind in (None, "xpu") and xpu is not None and xpu.is_available():
        props = xpu.get_device_properties(index)
        return str(getattr(props, "name", props))
    return "cpu"


def _intel_scale(device: Any) -> float:
    """Fraction of a full Max 1550 card that this XPU device is (1.0 when unknown)."""
    try:
        import torch

        index = getattr(device, "index", None)
        units = int(torch.xpu.get_device_properties(index).max_compute_units)
    except Exception:
        return 1.0
    return min(1.0, units / _INTEL_MAX_1550_EUS) if units > 0 else 1.0


def peak_flops(device: Any = None, dtype: Any = "bf16") -> float | None:
    """Peak dense FLOP/s of ``device`` for ``dtype`` (bf16, fp16, fp32), or None."""
    key = _DTYPE_ALIASES.get(str(dtype).lower())
    if key is None:
        raise ValueError(f"unknown dtype {dtype!r}; use one of bf16, fp16, fp32")
    name = device_name(device)
    if name in ("cpu", "mps"):
        return None
    entry = lookup_peak(name)
    if entry is None:
        if name not in _warned_unknown:
            _warned_unknown.add(name)
            logger.warning("no peak FLOP/s known for %r: MFU reported as 0.0", name)
        return None
    value = getattr(entry, key)
    named_by_torch = device is None or _device_kind(device) is not None
    if value is not None and entry.match == ("MAX", "1550") and named_by_torch:
        value *= _intel_scale(device)  # one stack of a card counts half
    return value


def compute_mfu(
    flops: float | None,
    dt: float,
    device: Any = None,
    *,
    dtype: Any = "bf16",
    peak: float | None = None,
) -> float:
    """Model FLOPs Utilisation in percent: ``100 * flops / dt / peak``.

    ``flops`` is the work of one step on this device (``try_estimate``),
    ``dt`` the step's wall time in seconds. ``peak`` overrides the table.
    Returns 0.0 when the peak is unknown (CPU, unlisted accelerators), or
    when ``flops`` is missing or ``dt`` is not positive.
    """
    if flops is None or not math.isfinite(float(flops)) or flops <= 0:
        return 0.0
    if not dt or not math.isfinite(dt) or dt <= 0:
        return 0.0
    if peak is None:
        peak = peak_flops(device, dtype)
    if not peak:
        return 0.0
    return 100.0 * float(flops) / float(dt) / float(peak)


def _unwrap(model: Any) -> Any:
    """The module inside a DDP/FSDP-style wrapper: its hooks must not fire here."""
    inner = getattr(model, "module", None)
    import torch

    return inner if isinstance(inner, torch.nn.Module) else model


def _dummy_input(model: Any, input_shape: Sequence[int]) -> Any:
    import torch

    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    embedding = next(
        (m for m in model.modules() if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag))),
        None,
    )
    if embedding is not None:  # token ids
        return torch.randint(0, embedding.num_embeddings, tuple(input_shape), device=device)
    floating = [p.dtype for p in params if p.is_floating_point()]
    dtype = floating[0] if floating else torch.float32
    return torch.randn(tuple(input_shape), device=device, dtype=dtype)


def _scalar_from_output(output: Any) -> Any | None:
    """A scalar to differentiate: the output summed, or a ``loss`` it carries."""
    import torch

    if isinstance(output, torch.Tensor):
        return output.float().sum() if output.is_floating_point() else None
    loss = getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        for item in output:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item.float().sum()
    return None


# Attention ops FlopCounterMode has no formula for, and the ones whose backward
# it counts with flash attention's recomputation of the scores. ezpz counts
# *model* FLOPs (what MFU divides by): forward 2 matmuls (Q@K^T, P@V), backward
# 4 (dV, dP, dQ, dK), i.e. the 12·L·H·Q·T per token of the PaLM/nanoGPT formula,
# on every device and attention kernel alike.
_SDPA_FORWARD_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)
_SDPA_BACKWARD_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_cudnn_attention_backward",
)
# Ops that do real (matmul-like) work; seen but not counted -> named in a warning.
_HEAVY_OP_NAMES = frozenset(
    ("mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "mv", "addmv", "dot", "vdot", "linear")
)
_HEAVY_OP_WORDS = ("attention", "conv")


def _attention_forward_flops(query_shape: Any, key_shape: Any, value_shape: Any) -> int:
    """Q@K^T and P@V: ``2·b·h·s_q·s_k·(d_q + d_v)``."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (d_q + d_v)


def _sdpa_mapping() -> dict[Any, Any]:
    """Custom FlopCounterMode formulas for the attention ops (model FLOPs, see above)."""
    import torch

    aten = torch.ops.aten

    def forward(
        query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kw: Any
    ) -> int:
        return _attention_forward_flops(query, key, value)

    def backward(
        grad_out: Any,
        query: Any,
        key: Any,
        value: Any,
        *args: Any,
        out_shape: Any = None,
        **kw: Any,
    ) -> int:
        return 2 * _attention_forward_flops(query, key, value)  # 4 matmuls, no recompute

    mapping: dict[Any, Any] = {}
    for names, fn in ((_SDPA_FORWARD_OPS, forward), (_SDPA_BACKWARD_OPS, backward)):
        for name in names:
            op = getattr(aten, name, None)
            if op is not None:
                mapping[op] = fn
    return mapping


def _op_recorder() -> Any:
    """A dispatch mode that records the op packets run under it (to name uncounted ones)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Recorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: set[Any] = set()

        def __torch_dispatch__(
            self, func: Any, types: Any, args: Any = (), kwargs: Any = None
        ) -> Any:
            self.seen.add(getattr(func, "overloadpacket", func))
            return func(*args, **(kwargs or {}))

    return _Recorder()


def _uncounted_heavy_ops(seen: set[Any], registry: Any) -> list[str]:
    names = []
    for op in seen:
        if op in registry:
            continue
        name = str(getattr(op, "__name__", op)).split(".")[-1]
        if name in _HEAVY_OP_NAMES or any(word in name for word in _HEAVY_OP_WORDS):
            names.append(name)
    return sorted(set(names))


def try_estimate(
    model: Any,
    input_shape: Sequence[int] | None = None,
    *,
    example_input: Any = None,
    backward: bool = True,
) -> int | None:
    """FLOPs of one training step (forward + backward) of ``model``, or None.

    The model runs once on a dummy batch of ``input_shape`` (random token ids
    when it has an embedding layer, else random floats in the parameters'
    dtype and device), or on ``example_input``, under ``FlopCounterMode``.
    ``example_input`` may be one tensor or a tuple of positional arguments,
    e.g. ``example_input=(X, Y)`` for a model called as ``model(X, Y)`` that
    returns its loss (nanoGPT): the loss path is then measured as trained.
    Gradients are taken with ``torch.autograd.grad`` so existing ``.grad``
    fields are untouched, and buffers (e.g. BatchNorm statistics) are
    restored afterwards. A DDP-wrapped model is measured unwrapped: the
    count is per rank.

    Counted: matmuls, convolutions and scaled-dot-product attention (every
    kernel, CPU included, as model FLOPs: ``12·L·H·Q·T`` per token for
    attention, no recomputation). Elementwise ops are not. A matmul-like op
    torch has no formula for is named in a warning. Returns None, with the
    reason logged, when the count fails or is zero.
    """
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError as exc:
        logger.warning("FLOPs not estimated: torch is not available (%s)", exc)
        return None
    if input_shape is None and example_input is None:
        raise ValueError("try_estimate needs input_shape or example_input")

    module = _unwrap(model)
    saved_buffers = {name: buf.detach().clone() for name, buf in module.named_buffers()}
    try:
        if example_input is not None:
            inputs = example_input
        else:
            assert input_shape is not None  # checked above
            inputs = _dummy_input(module, input_shape)
        args = inputs if isinstance(inputs, tuple) else (inputs,)
        counter = FlopCounterMode(display=False, custom_mapping=_sdpa_mapping())
        recorder = _op_recorder()
        with counter, recorder:
            output = module(*args)
            if backward:
                scalar = _scalar_from_output(output)
                params = [p for p in module.parameters() if p.requires_grad]
                if scalar is not None and params and scalar.requires_grad:
                    torch.autograd.grad(scalar, params, allow_unused=True)
                else:
                    logger.info("FLOPs: no differentiable output; counting the forward only")
        total = int(counter.get_total_flops())
        missed = _uncounted_heavy_ops(recorder.seen, counter.flop_registry)
    except Exception as exc:
        logger.warning("FLOPs not estimated for %s: %s", type(module).__name__, exc)
        return None
    finally:
        with torch.no_grad():
            for name, buf in module.named_buffers():
                if name in saved_buffers:
                    buf.copy_(saved_buffers[name])
    if missed:
        logger.warning(
            "FLOPs of %s undercounted: torch has no FLOP formula for %s (not counted)",
            type(module).__name__,
            ", ".join(missed),
        )
    if total <= 0:
        logger.warning(
            "FLOPs not estimated for %s: FlopCounterMode counted 0 (no matmul/conv ops seen)",
            type(module).__name__,
        )
        return None
    return total
