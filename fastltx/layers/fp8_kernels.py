"""Triton kernel of ``fastltx.layers.linear.Fp8WeightLinear`` (imported only when Triton is installed).

One pass over an e4m3 weight block: each element read once (1 byte), multiplied by its row's scale,
written once in the run dtype (2 bytes). The scale is rounded to the run dtype first and the
product (exact in float32: 4 x 8 significant bits) rounded once, so the result is bit-identical to
eager PyTorch's ``weight.to(dtype) * scale.to(dtype)``, which takes two passes and 7 bytes an element.
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
