"""The fp8 feed-forward's one-op middle (bias + GELU + quantisation, fastltx/layers/fp8_gelu.py)
computes what the composed modules compute. Its Triton kernel is checked on the GPU
(tests/gpu/test_fp8_kernels.py); here the op's own path, its registration and its use."""

import pytest
import torch
import torch.nn.functional as F

from fastltx.layers import mlp
from fastltx.layers.fp8_gelu import gelu_quantize_rows
from fastltx.layers.linear import to_fp8


def fp8_ff(dtype, seed=0, weight_only=False):
    torch.manual_seed(seed)
    ff = mlp.FeedForward(48, 40).to(dtype)
    assert to_fp8(ff, lambda name, lin: True, weight_only) == 2
    return ff


def codes(t):
    return t.view(torch.uint8)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fp8_feed_forward_is_the_composed_modules(dtype):
    ff = fp8_ff(dtype)
    x = torch.randn(2, 7, 48).to(dtype) * 2
    want = ff.net[2](F.gelu(ff.net[0].proj(x), approximate="tanh"))
    got = ff(x)
    assert got.shape == (2, 7, 40) and torch.equal(got, want)


def test_the_op_is_the_composed_ops():
    g = torch.Generator().manual_seed(1)
    h = (torch.randn(9, 300, generator=g) * 4).to(torch.bfloat16)
    bias = torch.randn(300, generator=g).to(torch.bfloat16)
    h[2] = 0  # a zero row: the scale's floor
    for b in (bias, None):
        q, s = gelu_quantize_rows(h, b)
        want = F.gelu(h if b is None else h + b, approximate="tanh")
        scale = want.abs().amax(-1, keepdim=True).float().clamp(min=1e-12) / 448
        assert q.dtype == torch.float8_e4m3fn and s.shape == (9, 1) and torch.equal(s, scale)
        assert torch.equal(codes(q), codes((want.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn)))


def test_the_op_is_registered_correctly():
    """Fake (meta) implementation, schema and autograd registration agree with the real one."""
    h = torch.randn(5, 64, dtype=torch.bfloat16)
    for b in (torch.randn(64, dtype=torch.bfloat16), None):
        torch.library.opcheck(gelu_quantize_rows, (h, b))


@torch.no_grad()
def test_compiled_fp8_feed_forward_keeps_the_op_whole():
    """torch.compile calls the op as one kernel (no graph break) and gives the eager result (float32:
    Inductor's fused first quantisation is exact too)."""
    import torch._dynamo as dynamo
    ff = fp8_ff(torch.float32, seed=2)
    x = torch.randn(3, 11, 48) * 2
    want = ff(x)
    targets = []

    def backend(gm, example_inputs):  # records the graph's calls, then runs it as Inductor would
        from torch._inductor.compile_fx import compile_fx
        targets.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return compile_fx(gm, example_inputs)
    dynamo.reset()
    try:
        got = torch.compile(ff, fullgraph=True, backend=backend)(x)
    finally:
        dynamo.reset()
    assert any("gelu_quantize_rows" in t for t in targets), targets
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)


@torch.no_grad()
def test_weight_only_fp8_keeps_its_bf16_matmuls(monkeypatch):
    """Fp8WeightLinear multiplies in the run dtype: its feed-forward must not take the fp8 middle."""
    monkeypatch.setattr(mlp, "fp8_feed_forward", lambda *a: pytest.fail("fp8 middle taken"))
    ff = fp8_ff(torch.bfloat16, weight_only=True)
    x = torch.randn(4, 48).to(torch.bfloat16)
    assert torch.equal(ff(x), ff.net[2](F.gelu(ff.net[0].proj(x), approximate="tanh")))
