"""fp8 linears for Hopper: e4m3 weights with per-output-channel scales, activations quantised per
token on the fly, multiplied by ``torch._scaled_mm`` (no TensorRT-LLM needed).

y = (q(x) * sx) @ (q(W) * sw)^T + b, with sx = amax|x_row| / 448 and sw = amax|W_row| / 448.
Where ``_scaled_mm`` is unavailable (CPU), the same quantised operands are multiplied in float32,
so the numerics of the quantisation can be tested anywhere.

``Fp8WeightLinear`` only stores its weight in fp8 (same e4m3 + per-channel scale) and multiplies in
the input's dtype, dequantising a block of output rows at a time: half the bytes to hold and to
copy, the activations untouched (for models whose compute is small next to moving their weights,
such as the text encoder taking turns with the transformer on a small card).
"""

from collections.abc import Callable

import torch
from torch import nn

from fastltx.layers.optional_kernel import OptionalKernel

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448


QUANT_CHUNK = 2**25  # elements quantised at once outside torch.compile (float32 temporaries: ~300 MiB)


def _quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # max |x| per row in one pass (exact: no rounding in a maximum); x / scale promotes to float32
    # exactly as x.float() / scale would, without the float32 copy of x; clamp in place
    amax = torch.linalg.vector_norm(x, float("inf"), dim=-1, keepdim=True)
    scale = amax.float().clamp(min=1e-12) / E4M3_MAX
    return torch.div(x, scale).clamp_(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise symmetric e4m3 quantisation of a 2-D ``x``: (x_fp8, scale (rows, 1) float32).

    Eager, large inputs go in row blocks of at most ``QUANT_CHUNK`` elements, the same arithmetic
    per row: the float32 temporaries of a 24k-token, 16,384-wide feed-forward hidden would
    otherwise take ~5 GiB (the first 16 GiB run at 1024x1536 ran out of memory there). Compiled
    code fuses the temporaries away and takes one block."""
    rows, width = x.shape
    step = max(QUANT_CHUNK // max(width, 1), 1)
    if rows <= step or torch.compiler.is_compiling():
        return _quantize(x)
    out = torch.empty(x.shape, dtype=E4M3, device=x.device)
    scale = torch.empty(rows, 1, dtype=torch.float32, device=x.device)
    for i in range(0, rows, step):
        out[i:i + step], scale[i:i + step] = _quantize(x[i:i + step])
    return out, scale


class Fp8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", w)
        self.register_buffer("weight_scale", scale.view(1, -1))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.product(*quantize_rows(x.reshape(-1, shape[-1])), x.dtype)
        return (y if self.bias is None else y + self.bias).view(*shape[:-1], self.out_features)

    def product(self, xq: torch.Tensor, xs: torch.Tensor, dtype: torch.dtype,
                features: slice = slice(None)) -> torch.Tensor:
        """(rows, out_features) in ``dtype``, without the bias, from already quantised rows (e4m3 and
        their (rows, 1) float32 scales); ``features``: only those output features."""
        weight, scale = self.weight[features], self.weight_scale[0, features].view(1, -1)  # (strides of a (1, n) row)
        if xq.is_cuda:
            return torch._scaled_mm(xq, weight.t(), scale_a=xs, scale_b=scale, out_dtype=dtype)
        return ((xq.float() * xs) @ (weight.float() * scale.t()).t()).to(dtype)


# weight elements dequantised at once by Fp8WeightLinear (128 MiB in bf16): the largest block linear
# of the 19B transformer (16,384 x 4,096) and every one of Gemma 3 12B's in one piece
WEIGHT_CHUNK = 2**26
DEQUANT_BLOCK = 2048  # elements of a row per Triton program
DEQUANT = OptionalKernel("dequantize_rows_kernel", "fp8 weights, dequantisation")


def dequantize_rows(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` (rows, cols; e4m3) times its per-row ``scale`` (rows,), in ``dtype``.

    One fused pass (Triton) on GPUs that convert e4m3 natively (Ada, Hopper), bit-identical to
    PyTorch's two eager passes, ``weight.to(dtype).mul_(scale.to(dtype))``, used elsewhere (inside
    torch.compile Inductor fuses those itself, and may skip the scale's rounding to ``dtype``). The
    two passes move 7 bytes a weight against 3: on an H100 an eager 19B forward with fp8 weights
    took 500 ms with them against 417-423 ms with the kernel (bf16 weights: 405-408 ms)."""
    if weight.is_cuda and weight.is_contiguous() and DEQUANT.usable() and fp8_supported(weight.device):
        rows, cols = weight.shape
        out = torch.empty(rows, cols, dtype=dtype, device=weight.device)
        if not out.numel() or DEQUANT.launch(weight.device, (rows, -(-cols // DEQUANT_BLOCK)), weight,
                                             scale.contiguous(), out, cols, BLOCK=DEQUANT_BLOCK):
            return out
    return weight.to(dtype).mul_(scale[:, None].to(dtype))


class Fp8WeightLinear(Fp8Linear):
    """The same stored weight as ``Fp8Linear``; the product in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = max(WEIGHT_CHUNK // max(self.in_features, 1), 1)
        if rows >= self.out_features:
            return nn.functional.linear(x, self._dequantized(0, self.out_features, x.dtype), self.bias)
        y = x.new_empty(*x.shape[:-1], self.out_features)
        for i in range(0, self.out_features, rows):
            j = min(i + rows, self.out_features)
            bias = None if self.bias is None else self.bias[i:j]
            y[..., i:j] = nn.functional.linear(x, self._dequantized(i, j, x.dtype), bias)
        return y

    def _dequantized(self, i: int, j: int, dtype: torch.dtype) -> torch.Tensor:
        # e4m3 -> the run dtype is exact; the scale's rounding to it (bf16: 2^-9) is far below e4m3's (2^-4)
        return dequantize_rows(self.weight[i:j], self.weight_scale[0, i:j], dtype)


def linear_rows(layer: nn.Module, x: torch.Tensor, start: int, stop: int,
                after: torch.Tensor | None = None) -> torch.Tensor:
    """Output features [start, stop) of ``layer(x)``, from those rows of its weight alone (an
    nn.Linear, Fp8Linear or Fp8WeightLinear; any other layer is run whole and sliced).

    ``after``: a zero (one element) that the product is made to read, so that compiled code, which
    orders kernels by their data alone, runs it after whatever made the zero (the "push" exchange's
    start: fastltx/runtime/push.py; 2 x H200 traces: with the zero added to the product's output,
    Inductor still ran the GEMM before the start). It is added where that costs no pass over ``x``:
    to the bias, which the GEMM adds itself (to fp8 linears' activation scales), else to ``x``.
    Adding a zero changes nothing."""
    bias = None if getattr(layer, "bias", None) is None else layer.bias[start:stop]
    if after is not None and isinstance(layer, nn.Linear | Fp8WeightLinear) and bias is not None:
        bias, after = bias + after.to(bias.dtype), None
    if isinstance(layer, Fp8Linear) and not isinstance(layer, Fp8WeightLinear):
        shape = x.shape
        xq, xs = quantize_rows(x.reshape(-1, shape[-1]))
        y = layer.product(xq, xs if after is None else xs + after.float(), x.dtype, slice(start, stop))
        return (y if bias is None else y + bias).view(*shape[:-1], stop - start)
    if after is not None:
        x = x + after.to(x.dtype)
    if isinstance(layer, Fp8WeightLinear):
        return nn.functional.linear(x, layer._dequantized(start, stop, x.dtype), bias)
    if isinstance(layer, nn.Linear):
        return nn.functional.linear(x, layer.weight[start:stop], bias)
    return layer(x)[..., start:stop]


def to_fp8(module: nn.Module, select: Callable[[str, nn.Linear], bool], weight_only: bool = False) -> int:
    """Replace the nn.Linear children chosen by ``select(qualified_name, linear)`` by Fp8Linear
    (``weight_only``: by Fp8WeightLinear).

    Returns how many were replaced. Their bf16 weights are released.
    """
    # Names first, modules fetched one at a time: each bf16 weight is released as soon as its fp8
    # copy exists, so the peak stays near the final size (holding every Linear until the end would
    # need the bf16 and the fp8 model at once).
    targets = [(name, attr) for name, child in module.named_modules() for attr, sub in child.named_children()
               if isinstance(sub, nn.Linear) and select(f"{name}.{attr}" if name else attr, sub)]
    for name, attr in targets:
        parent = module.get_submodule(name) if name else module
        setattr(parent, attr, (Fp8WeightLinear if weight_only else Fp8Linear)(getattr(parent, attr)))
    return len(targets)


def fp8_supported(device: torch.device | str) -> bool:
    """_scaled_mm with e4m3 needs compute capability 8.9+ (Ada, Hopper)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


__all__ = ["Fp8Linear", "Fp8WeightLinear", "dequantize_rows", "fp8_supported", "quantize_rows", "to_fp8"]
