"""Triton kernels of the fp8 linears (imported only when Triton is installed; see optional_kernel.py).

``dequantize_rows_kernel`` (``Fp8WeightLinear``): one pass over an e4m3 weight block, each element
read once (1 byte), multiplied by its row's scale, written once in the run dtype (2 bytes). The scale
is rounded to the run dtype first and the product (exact in float32: 4 x 8 significant bits) rounded
once, so the result is bit-identical to eager PyTorch's ``weight.to(dtype) * scale.to(dtype)``, which
takes two passes and 7 bytes an element.

``gelu_quantize_rows_kernel`` (the fp8 feed-forward, fp8_gelu.py): bias + GELU(tanh) + per-row amax
+ e4m3 cast of the hidden in one pass, a whole row per program: 2 bytes read and 1 written an
element, where the composed ops read the hidden twice and evaluate the tanh twice. It rounds where
eager PyTorch rounds (the bias sum and the GELU to the run dtype), but evaluates the GELU in its
sigmoid form with approximate float32 exp and division, and multiplies by the reciprocal scale: its
GELU values differ from PyTorch's by a few float32 ulps, so a few e4m3 codes in 10^4 come out one
step apart (tests/gpu/test_fp8_kernels.py bounds its error by the composed ops' own).
"""

import triton
import triton.language as tl


@triton.jit  # cols is specialised on divisibility by 16 (Triton's default): aligned, vectorised loads
def dequantize_rows_kernel(w_ptr, scale_ptr, out_ptr, cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < cols
    dtype = out_ptr.dtype.element_ty
    scale = tl.load(scale_ptr + row).to(dtype).to(tl.float32)
    w = tl.load(w_ptr + row * cols + offs, mask=ok).to(tl.float32)
    tl.store(out_ptr + row * cols + offs, (w * scale).to(dtype), mask=ok)


@triton.jit
def gelu_quantize_rows_kernel(h_ptr, bias_ptr, out_ptr, scale_ptr, cols, HAS_BIAS: tl.constexpr,
                              BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < cols
    dtype = h_ptr.dtype.element_ty
    x = tl.load(h_ptr + row * cols + offs, mask=ok, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x = (x + tl.load(bias_ptr + offs, mask=ok, other=0.0).to(tl.float32)).to(dtype).to(tl.float32)
    # 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2 / pi) (x + 0.044715 x^3): one ex2 and one
    # approximate division, where libdevice's tanh and an exact division per element made the kernel
    # compute-bound (295-363 us at 6,144 x 16,384 on an H100, ~100 us of it memory traffic)
    e = tl.exp2(-2.302208198 * x * (1.0 + 0.044715 * x * x))  # -2 sqrt(2 / pi) log2(e)
    g = tl.fdiv(x, 1.0 + e).to(dtype)  # exp overflow (x < -10): x / inf = -0, as gelu's 0
    amax = tl.maximum(tl.max(tl.abs(g), axis=0).to(tl.float32), 1e-12)
    scale = tl.div_rn(amax, 448.0)
    # a NaN in the row stays NaN (its code), as in the composed ops; an inf makes the scale inf and
    # its own code NaN, as there
    q = tl.minimum(tl.maximum(g.to(tl.float32) * (1.0 / scale), -448.0, propagate_nan=tl.PropagateNan.ALL),
                   448.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(out_ptr + row * cols + offs, q.to(tl.float8e4nv), mask=ok)
    tl.store(scale_ptr + row, scale)
