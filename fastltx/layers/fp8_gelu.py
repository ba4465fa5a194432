"""The fp8 feed-forward's middle: bias + GELU(tanh) + per-row e4m3 quantisation of the hidden in one pass.

With both feed-forward linears in fp8 (``Fp8Linear``), the 16,384-wide hidden of the 19B model
goes from the first fp8 matmul to the second only to be biased, put through the GELU and quantised
per row. Composed (eager, or fused by Inductor) that reads the hidden twice, for the row maximum
and for the cast, and evaluates the tanh twice: 354-394 us a call on an H100 at 6,144 tokens,
19 ms of a 263-265 ms forward. One Triton program per row reads it once (``fp8_kernels.py``): 144 us,
and the compiled fp8 forward went from 263.3 to 254.5 ms (docs/benchmarks.md).

``gelu_quantize_rows`` is a custom op, so that torch.compile calls it as one opaque kernel instead
of tracing into it. Its other path is the composed ops (also what the kernel is tested against): on
CPUs, on GPUs without e4m3, for widths beyond ``MAX_COLS``, for a non-contiguous hidden or a bias of
another dtype, without Triton, or when the kernel is disabled or failed to build.
"""

import torch
import torch.nn.functional as F

from fastltx.layers.linear import E4M3, Fp8Linear, fp8_supported, quantize_rows
from fastltx.layers.optional_kernel import OptionalKernel

MAX_COLS = 32768  # a whole row per Triton program (held in registers); wider rows take the composed ops
GELU_QUANTIZE = OptionalKernel("gelu_quantize_rows_kernel", "fp8 feed-forward, GELU + quantisation")


def composed(h: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference arithmetic: ``quantize_rows(gelu_tanh(h + bias))``."""
    return quantize_rows(F.gelu(h if bias is None else h + bias, approximate="tanh"))


def _fused(h: torch.Tensor, bias: torch.Tensor | None, num_warps: int | None = None):
    rows, cols = h.shape
    out = torch.empty(rows, cols, dtype=E4M3, device=h.device)
    scale = torch.empty(rows, 1, dtype=torch.float32, device=h.device)
    if not rows:
        return out, scale
    block = triton_block(cols)
    warps = num_warps or min(32, max(4, block // 512))  # H100, 6,144 x 16,384: 32 warps 144 us, 4-16 149-161
    b = h if bias is None else bias.contiguous()
    if GELU_QUANTIZE.launch(h.device, (rows,), h, b, out, scale, cols, HAS_BIAS=bias is not None, BLOCK=block,
                            num_warps=warps):
        return out, scale
    return None


def triton_block(cols: int) -> int:
    return 1 << max(cols - 1, 0).bit_length()


def kernel_applies(h: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return (h.is_cuda and h.dim() == 2 and h.is_contiguous() and 0 < h.shape[1] <= MAX_COLS
            and (bias is None or bias.dtype == h.dtype) and GELU_QUANTIZE.usable() and fp8_supported(h.device))


@torch.library.custom_op("fastltx::gelu_quantize_rows", mutates_args=())
def gelu_quantize_rows(h: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 rows, (rows, 1) float32 scales) of ``gelu_tanh(h + bias)`` for a 2-D ``h``."""
    if kernel_applies(h, bias):
        out = _fused(h, bias)
        if out is not None:
            return out
    return composed(h, bias)


@gelu_quantize_rows.register_fake
def _(h: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    return h.new_empty(h.shape, dtype=E4M3), h.new_empty(h.shape[0], 1, dtype=torch.float32)


def fp8_feed_forward(x: torch.Tensor, first: Fp8Linear, last: Fp8Linear) -> torch.Tensor:
    """``last(gelu_tanh(first(x)))`` with the hidden never written in the run dtype after its GELU."""
    shape = x.shape
    h = first.product(*quantize_rows(x.reshape(-1, shape[-1])), x.dtype)
    y = last.product(*gelu_quantize_rows(h, first.bias), x.dtype)
    return (y if last.bias is None else y + last.bias).view(*shape[:-1], last.out_features)
