"""FLOP counting and MFU arithmetic (ezpz.flops)."""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch", reason="ezpz.flops needs torch")

from ezpz import flops  # noqa: E402
from ezpz.flops import PEAK_FLOPS_TABLE, compute_mfu, lookup_peak, peak_flops, try_estimate  # noqa: E402


def mlp(d_in: int, d_hidden: int, d_out: int, bias: bool = True) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(d_in, d_hidden, bias=bias),
        torch.nn.ReLU(),
        torch.nn.Linear(d_hidden, d_out, bias=bias),
    )


def test_two_layer_mlp_counts_match_hand_count():
    batch, d_in, d_hidden, d_out = 3, 8, 16, 4
    model = mlp(d_in, d_hidden, d_out)
    # forward: one (B x in) @ (in x out) matmul per layer = 2*B*in*out FLOPs (bias adds are free)
    fwd = 2 * batch * (d_in * d_hidden + d_hidden * d_out)
    # backward: layer 2 needs grad-input and grad-weight (2 matmuls), layer 1 only
    # grad-weight because the dummy input does not require grad.
    bwd = 2 * (2 * batch * d_hidden * d_out) + 2 * batch * d_in * d_hidden
    assert fwd == 1152 and bwd == 1536  # the hand count, written out
    assert try_estimate(model, (batch, d_in), backward=False) == fwd
    assert try_estimate(model, (batch, d_in)) == fwd + bwd


def test_example_input_and_batch_scaling():
    model = mlp(5, 7, 3, bias=False)
    one = try_estimate(model, example_input=torch.randn(1, 5))
    ten = try_estimate(model, example_input=torch.randn(10, 5))
    assert one is not None and ten == 10 * one


def test_embedding_model_gets_token_ids():
    model = torch.nn.Sequential(torch.nn.Embedding(100, 16), torch.nn.Linear(16, 8))
    # (batch=2, seq=5) token ids -> 10 rows through the linear layer; the
    # embedding lookup itself is not a FLOP op. The linear layer's input is
    # the trainable embedding's output, so backward computes grad-input and
    # grad-weight: 3x the forward matmul.
    assert try_estimate(model, (2, 5)) == 3 * (2 * 10 * 16 * 8)


def test_existing_grads_and_buffers_are_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    bn = model[1]
    before_mean = bn.running_mean.clone()
    before_count = int(bn.num_batches_tracked)
    assert try_estimate(model, (6, 4)) == 2 * (2 * 6 * 4 * 4)
    for p in model.parameters():
        assert torch.equal(p.grad, torch.full_like(p, 7.0))
    assert torch.equal(bn.running_mean, before_mean)
    assert int(bn.num_batches_tracked) == before_count


def test_wrapped_model_is_measured_unwrapped():
    class Wrapper(torch.nn.Module):  # shaped like DDP: the real model under .module
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, x):  # pragma: no cover - must not be called
            raise AssertionError("wrapper forward called")

    inner = mlp(8, 8, 2)
    assert try_estimate(Wrapper(inner), (4, 8)) == try_estimate(inner, (4, 8))


def test_returns_none_with_a_logged_reason(caplog):
    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            raise RuntimeError("boom")

    with caplog.at_level(logging.WARNING, logger="ezpz.flops"):
        assert try_estimate(Broken(), (1, 2)) is None
        assert try_estimate(torch.nn.ReLU(), (3, 3)) is None
    text = caplog.text
    assert "boom" in text and "counted 0" in text


def test_needs_a_shape_or_an_input():
    with pytest.raises(ValueError, match="input_shape"):
        try_estimate(mlp(2, 2, 2))


def test_compute_mfu_arithmetic():
    assert compute_mfu(1e12, 0.5, peak=4e12) == pytest.approx(50.0)
    h100 = "NVIDIA H100 80GB HBM3"
    assert compute_mfu(989e12 / 4, 1.0, h100) == pytest.approx(25.0)
    assert compute_mfu(19.5e12, 2.0, "NVIDIA A100-SXM4-80GB", dtype="fp32") == pytest.approx(50.0)
    assert compute_mfu(312e12, 1.0, "NVIDIA A100-SXM4-40GB", dtype=torch.float16) == pytest.approx(
        100.0
    )


@pytest.mark.parametrize(
    ("flops_value", "dt", "device"),
    [
        (1e12, 0.1, "cpu"),  # no peak on CPU
        (1e12, 0.1, None),  # current device is the CPU here
        (1e12, 0.1, "NVIDIA V100-SXM2-32GB"),  # V100 has no bf16 peak
        (None, 0.1, "NVIDIA H100 80GB HBM3"),  # try_estimate failed
        (1e12, 0.0, "NVIDIA H100 80GB HBM3"),
        (1e12, -1.0, "NVIDIA H100 80GB HBM3"),
        (float("nan"), 0.1, "NVIDIA H100 80GB HBM3"),
    ],
)
def test_compute_mfu_is_zero_when_it_cannot_be_known(flops_value, dt, device):
    if device is None and torch.cuda.is_available():
        pytest.skip("the current device is a GPU here")
    assert compute_mfu(flops_value, dt, device) == 0.0


def test_unknown_accelerator_warns_once(caplog):
    name = "ACME TensorBlaster 9000"
    with caplog.at_level(logging.WARNING, logger="ezpz.flops"):
        assert compute_mfu(1e12, 1.0, name) == 0.0
        assert compute_mfu(1e12, 1.0, name) == 0.0
    assert caplog.text.count(name) == 1


def test_bad_dtype_is_a_clear_error():
    with pytest.raises(ValueError, match="bf16, fp16, fp32"):
        peak_flops("NVIDIA H100 80GB HBM3", dtype="int8")


@pytest.mark.parametrize(
    ("name", "expected_bf16"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA GH200 480GB", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("AMD Instinct MI300X", 1307.4e12),
        ("AMD Instinct MI250X", 191.5e12),
        ("AMD Instinct MI250", 181.0e12),
        ("Intel(R) Data Center GPU Max 1550", 838.9e12),
    ],
)
def test_table_lookup_picks_the_specific_variant(name, expected_bf16):
    entry = lookup_peak(name)
    assert entry is not None and entry.bf16 == expected_bf16
    assert peak_flops(name) == expected_bf16  # a name string is not scaled


def test_every_table_entry_has_a_source_and_a_number():
    for entry in PEAK_FLOPS_TABLE:
        assert entry.source.strip()
        numbers = [v for v in (entry.bf16, entry.fp16, entry.fp32) if v is not None]
        assert numbers and all(v > 1e12 for v in numbers)
        # fp32 (no tensor cores) is never faster than the half-precision paths
        if entry.fp32 and entry.fp16:
            assert entry.fp32 < entry.fp16


def test_intel_stack_counts_half_a_card(monkeypatch):
    class Props:
        name = "Intel(R) Data Center GPU Max 1550"
        max_compute_units = 512  # one stack, as Aurora's FLAT mode shows it

    class FakeXPU:
        @staticmethod
        def get_device_properties(index=None):
            return Props()

    monkeypatch.setattr(flops, "device_name", lambda device=None: Props.name)
    monkeypatch.setattr(torch, "xpu", FakeXPU, raising=False)
    assert peak_flops("xpu:0") == pytest.approx(838.9e12 / 2)


# -- attention (issue 12 item 18): CPU scaled_dot_product_attention is counted --
class _Block(torch.nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width, bias=False)
        self.proj = torch.nn.Linear(width, width, bias=False)
        self.ln2 = torch.nn.LayerNorm(width)
        self.fc = torch.nn.Linear(width, 4 * width, bias=False)
        self.out = torch.nn.Linear(4 * width, width, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x))))


class TinyGPT(torch.nn.Module):
    """nanoGPT's shape: tied embedding/head, causal SDPA, forward(idx, targets) -> loss."""

    def __init__(self, vocab: int, seq: int, width: int, heads: int, layers: int) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, width)
        self.wpe = torch.nn.Embedding(seq, width)
        self.blocks = torch.nn.ModuleList(_Block(width, heads) for _ in range(layers))
        self.lnf = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.lnf(x))
        if targets is None:
            return logits
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def test_gpt_count_matches_6n_plus_12lhqt_on_cpu():
    vocab, seq, width, heads, layers, batch = 64, 16, 32, 4, 2, 3
    model = TinyGPT(vocab, seq, width, heads, layers)
    x = torch.randint(0, vocab, (batch, seq))
    y = torch.randint(0, vocab, (batch, seq))
    # N: the weights of every matmul (the tied head counts once, as wte; wpe is a lookup)
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "wpe" not in name)
    tokens = batch * seq
    expected = tokens * (6 * n + 12 * layers * heads * (width // heads) * seq)
    assert try_estimate(model, example_input=(x, y)) == expected
    # forward only: 2N + 4LHQT per token
    forward = tokens * (2 * n + 4 * layers * heads * (width // heads) * seq)
    assert try_estimate(model, example_input=(x, y), backward=False) == forward


def test_attention_alone_counts_two_matmuls_forward_four_backward():
    b, h, t, d = 2, 4, 16, 8
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))

    class Attn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(q * self.scale, k, v)

    fwd = 2 * 2 * b * h * t * t * d
    assert try_estimate(Attn(), example_input=q, backward=False) == fwd
    assert try_estimate(Attn(), example_input=q) == 3 * fwd


def test_uncounted_matmul_like_ops_are_named(caplog):
    class MatVec(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(8, 8))
            self.lin = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.lin(torch.mv(self.w, x[0]).unsqueeze(0))

    with caplog.at_level(logging.WARNING, logger="ezpz.flops"):
        assert try_estimate(MatVec(), (1, 8)) is not None
    assert "undercounted" in caplog.text and "mv" in caplog.text


def test_cpu_mfu_needs_a_peak():
    # No table entry for a CPU: 0.0 unless the caller says what the peak is.
    assert compute_mfu(1e12, 1.0, device="cpu") == 0.0
    assert compute_mfu(1e12, 1.0, device="cpu", peak=4e12) == pytest.approx(25.0)
