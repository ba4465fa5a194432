"""The Triton kernels of the fp8 linears (fastltx/layers/fp8_kernels.py) against the PyTorch ops they
replace, and their fallback when Triton cannot build them (skipped without CUDA)."""

import pytest
import torch

from fastltx.layers import fp8_gelu, linear
from fastltx.layers.linear import fp8_supported
from fastltx.layers.optional_kernel import OptionalKernel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
needs_e4m3 = pytest.mark.skipif(not torch.cuda.is_available() or not fp8_supported("cuda"), reason="needs e4m3 on the GPU")


@needs_e4m3
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(37, 3000), (5, 4096), (1, 1)])
def test_fused_dequantisation_is_bit_identical(shape, dtype):
    """The one-pass Triton dequantisation gives exactly PyTorch's two eager passes (the CPU's path),
    at widths that are and are not a multiple of its block, for a zero row and rows so small that
    their scale is subnormal or zero in float16."""
    pytest.importorskip("triton")
    assert linear.DEQUANT.usable()  # the kernel, not the fallback, is under test
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3
    if shape[0] > 3:
        x[0], x[1], x[2] = 0.0, x[1] * 1e-6, x[2] * 1e-30
    w, scale = linear.quantize_rows(x.cuda())
    got = linear.dequantize_rows(w, scale[:, 0], dtype)
    want = w.to(dtype).mul_(scale.to(dtype))
    assert got.dtype == dtype and torch.equal(got, want)
    if shape[0] > 3:  # a block of rows (a view at an offset), as Fp8WeightLinear passes them
        assert torch.equal(linear.dequantize_rows(w[2:4], scale[2:4, 0], dtype), want[2:4])


@needs_e4m3
@pytest.mark.parametrize("dtype,shape,bias", [(torch.bfloat16, (64, 16384), True), (torch.float16, (37, 3000), True),
                                              (torch.bfloat16, (5, 4096), False), (torch.bfloat16, (3, 1), True)])
def test_fused_gelu_quantisation_is_the_composed_ops(dtype, shape, bias):
    """One Triton pass gives what quantize_rows(gelu_tanh(h + bias)) gives, up to its GELU's few
    float32 ulps (sigmoid form, approximate exp): scales one dtype step apart at most, e4m3 codes one
    step apart at most and rarely (Inductor's fusion of the composed ops, which skips the rounding
    to the run dtype, differs in ~4% of the codes), and no larger error against the exact GELU; a
    zero row and a row of tiny values included."""
    pytest.importorskip("triton")
    g = torch.Generator().manual_seed(2)
    h = (torch.randn(*shape, generator=g) * 3).to(dtype)
    b = (torch.randn(shape[1], generator=g) * 0.5).to(dtype) if bias else None
    if shape[0] > 3:  # rows whose biased values are zero, and tiny
        minus_b = 0.0 if b is None else -b
        h[0], h[1] = minus_b, (minus_b + torch.randn(shape[1], generator=g) * 1e-3).to(dtype)
    h, b = h.cuda(), None if b is None else b.cuda()
    assert fp8_gelu.kernel_applies(h, b)
    got = fp8_gelu._fused(h, b)
    assert got is not None and fp8_gelu.GELU_QUANTIZE.ran
    (q, s), (wq, ws) = got, fp8_gelu.composed(h, b)
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float32 and s.shape == (shape[0], 1)
    assert torch.allclose(s, ws, rtol=2**-7 if dtype == torch.bfloat16 else 2**-10, atol=0)  # one step of dtype
    steps = (q.view(torch.uint8).int() - wq.view(torch.uint8).int()).abs()
    assert steps.max() <= 1 and (steps > 0).float().mean() <= 1e-2
    x = (h if b is None else h + b).double()
    exact = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    err = [((t.double() * sc.double() - exact).norm() / exact.norm()).item() for t, sc in ((q, s), (wq, ws))]
    assert err[0] <= 1.01 * err[1], err
    assert torch.equal(fp8_gelu.gelu_quantize_rows(h, b)[0].view(torch.uint8), q.view(torch.uint8))  # the op takes it


@needs_e4m3
def test_fused_gelu_quantisation_keeps_nan_and_inf_visible():
    """A NaN in the hidden stays NaN in its code and an inf row gives what the composed ops give,
    so a diverging step is not hidden behind finite codes."""
    pytest.importorskip("triton")
    h = torch.randn(3, 256, device="cuda").to(torch.bfloat16)
    h[0, 5], h[1, 7] = float("nan"), float("inf")
    q, s = fp8_gelu._fused(h, None)
    wq, ws = fp8_gelu.composed(h, None)
    codes, want = q.float(), wq.float()
    assert codes[0, 5].isnan() and torch.isinf(s[1]).all() and torch.isinf(ws[1]).all()
    assert torch.equal(codes[1].isnan(), want[1].isnan()) and codes[1, 7].isnan()  # the inf row: as composed
    assert torch.equal(codes[1].nan_to_num(0), want[1].nan_to_num(0))


@needs_e4m3
def test_fp8_feed_forward_on_the_gpu_is_close_to_bf16():
    """The whole fp8 feed-forward (scaled matmuls around the fused middle) stays within e4m3's error."""
    from fastltx.layers.linear import to_fp8
    from fastltx.layers.mlp import FeedForward
    torch.manual_seed(3)
    ff = FeedForward(256).cuda().to(torch.bfloat16)
    x = torch.randn(2, 300, 256, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        want = ff(x).float()
        to_fp8(ff, lambda name, lin: True)
        got = ff(x).float()
    err = ((got - want).norm() / want.norm()).item()
    assert 1e-3 < err < 6e-2, err


class Broken:
    """A Triton kernel whose launch fails (no C compiler, say)."""
    def __init__(self):
        self.calls = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append(grid)
            raise RuntimeError("no C compiler")
        return launch


def broken(monkeypatch, module, attr) -> Broken:
    kernel = Broken()
    fresh = OptionalKernel(getattr(module, attr).name, "test kernel")
    monkeypatch.setattr(fresh, "kernel", lambda: kernel)
    monkeypatch.setattr(module, attr, fresh)
    monkeypatch.setattr(module, "fp8_supported", lambda device: True)
    return kernel


def test_a_dequantisation_kernel_that_cannot_build_falls_back_once(monkeypatch):
    """A Triton that fails at the first launch: a warning, PyTorch's passes, no further attempts."""
    kernel = broken(monkeypatch, linear, "DEQUANT")
    w, scale = linear.quantize_rows(torch.randn(8, 16, device="cuda"))
    want = w.to(torch.bfloat16).mul_(scale.to(torch.bfloat16))
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert torch.equal(linear.dequantize_rows(w, scale[:, 0], torch.bfloat16), want)
    assert torch.equal(linear.dequantize_rows(w, scale[:, 0], torch.bfloat16), want) and len(kernel.calls) == 1


def test_a_gelu_kernel_that_cannot_build_falls_back_once(monkeypatch):
    kernel = broken(monkeypatch, fp8_gelu, "GELU_QUANTIZE")
    h = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
    want = fp8_gelu.composed(h, None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        first = fp8_gelu.gelu_quantize_rows(h, None)
    for q, s in (first, fp8_gelu.gelu_quantize_rows(h, None)):
        assert torch.equal(q.view(torch.uint8), want[0].view(torch.uint8)) and torch.equal(s, want[1])
    assert len(kernel.calls) == 1
