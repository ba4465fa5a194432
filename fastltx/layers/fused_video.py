"""Fused GPU kernels (Triton) for the video VAE's memory-bound steps, on channels-last activations.

* ``norm_act_pad``: a convolution's input in one pass: PixelNorm, modulation and SiLU (any subset),
  the spatial padding (reflect / replicate) and the temporal padding (replicated edge frames, or
  frames carried over from the previous chunk when streaming), written straight into the buffer the
  convolution reads. The eager path makes five to seven activation-sized passes for the same.
* ``depth_to_space``: the depth-to-space rearrangement (optionally dropping leading frames) plus,
  for residual upsamplers, the input's rearranged and channel-repeated copy, in one pass.
* ``add_bias_residual_``: a resnet's end, ``h + bias + skip`` in place, one pass.

Convolutions on this path leave their bias to the next of these kernels (``bias`` arguments), which
saves PyTorch's separate pass over every convolution output.

Arithmetic runs in float32 and rounds once at the end; the eager path rounds after every step in
the activation dtype, so bf16 results differ from it at bf16 rounding level (float32: at float32
rounding level).
``depth_to_space`` without a bias is a permutation plus one add and rounds as the eager path does.

Used only on CUDA, and only for convolutions whose weights are stored channels-last (the loaders'
default on CUDA; ``channels_last=False`` keeps the eager, reference-identical path).
"""

import functools

import torch
from torch import nn

PADDING_CODES = {"zeros": 0, "reflect": 1, "replicate": 2}
# Launch shape of every kernel: a program handles rows x channels of about this many elements
# (``bench/video_vae_kernels.py`` compares settings on the GPU).
ELEMENTS_PER_PROGRAM = 4096
NUM_WARPS = 4
D2S_ELEMENTS_PER_PROGRAM = 2048  # its strided channel gathers run faster in smaller programs (H100: 1.35 vs 0.88 TB/s)


@functools.cache
def _triton():
    try:
        from fastltx.layers import video_kernels
    except ImportError:  # no Triton: the eager path
        return None
    return {"norm_act_pad": video_kernels.norm_act_pad_kernel,
            "depth_to_space": video_kernels.depth_to_space_kernel,
            "add_bias_residual": video_kernels.add_bias_residual_kernel}


def available() -> bool:
    return _triton() is not None


def weights_usable(conv: nn.Conv3d) -> bool:
    """Whether a convolution's weights select the fused path: on CUDA, stored channels-last, Triton there."""
    w = conv.weight
    return (w.is_cuda and w.shape[1] > 1 and w.is_contiguous(memory_format=torch.channels_last_3d)
            and not w.is_contiguous() and available())


def conv_usable(x: torch.Tensor, conv: nn.Conv3d) -> bool:
    """Whether ``CausalConv3d`` may take the fused path for this input and convolution."""
    w = conv.weight
    if not (x.is_cuda and x.dtype == w.dtype and x.dtype in (torch.bfloat16, torch.float16, torch.float32)):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return False  # the kernels have no backward: keep autograd on the eager path
    if not weights_usable(conv):
        return False
    if conv.padding_mode not in PADDING_CODES or conv.groups != 1 or tuple(conv.dilation) != (1, 1, 1):
        return False
    if tuple(conv.stride[1:]) != (1, 1) or conv.stride[0] != 1:
        return False
    pad = conv.padding[1]
    if conv.padding_mode == "reflect" and (pad >= x.shape[3] or pad >= x.shape[4]):
        return False  # the eager path raises PyTorch's own error
    return True


def output_usable(y: torch.Tensor) -> bool:
    """Whether a channels-last CUDA result may be rearranged by ``depth_to_space`` here."""
    if torch.is_grad_enabled() and y.requires_grad:
        return False
    return y.is_cuda and y.is_contiguous(memory_format=torch.channels_last_3d) and available()


def _rows_per_program(channels: int, elements: int | None = None) -> tuple[int, int]:
    block_c = 1 << max(0, (channels - 1).bit_length())
    return block_c, max(1, (elements or ELEMENTS_PER_PROGRAM) // block_c)


def _modulation(t: torch.Tensor | None, batch: int, channels: int, like: torch.Tensor):
    """(B or 1, C, 1, 1, 1) -> contiguous float32 (B', C) and its batch stride (0: shared by the batch)."""
    if t is None:
        return like, 0
    t = t.reshape(-1, channels).float().contiguous()
    if t.shape[0] not in (1, batch):
        raise ValueError(f"modulation batch {t.shape[0]} does not match the activation batch {batch}")
    return t, (channels if t.shape[0] > 1 else 0)


def norm_act_pad(x: torch.Tensor, act, front: int, back: int, pad: int, mode: str,
                 lead: torch.Tensor | None = None) -> torch.Tensor:
    """The padded convolution input: ``lead`` frames (already processed, e.g. carried from the previous
    chunk), ``front`` copies of the first processed frame, ``act(x)`` (or ``x`` when ``act`` is None),
    ``back`` copies of the last frame; spatially padded by ``pad`` in ``mode`` (zeros, reflect,
    replicate). Channels-last, in ``x``'s dtype."""
    kernels = _triton()
    b, c, n, h, w = x.shape
    held = 0 if lead is None else lead.shape[2]
    total = held + front + n + back
    out = torch.empty((b, c, total, h + 2 * pad, w + 2 * pad), device=x.device, dtype=x.dtype,
                      memory_format=torch.channels_last_3d)
    if held:
        out[:, :, :held].copy_(lead)
    if n:
        rows = b * n * (h + 2 * pad) * (w + 2 * pad)
        block_c, rows_per = _rows_per_program(c)
        scale, s_stride = _modulation(None if act is None else act.scale, b, c, x)
        shift, _ = _modulation(None if act is None else act.shift, b, c, x)
        bias = None if act is None else act.bias
        grid = (triton_cdiv(rows, rows_per),)
        kernels["norm_act_pad"][grid](
            x, out, scale, shift, x if bias is None else bias, rows, c, n, h, w, h + 2 * pad, w + 2 * pad,
            *x.stride(), *out.stride(), held + front, pad, s_stride, 0.0 if act is None else act.eps,
            MODE=PADDING_CODES[mode], BIAS=bias is not None, NORM=act is not None,
            MOD=act is not None and act.scale is not None, ACT=act is not None, ROWS=rows_per, BLOCK_C=block_c,
            num_warps=NUM_WARPS)
        if front:
            out[:, :, held:held + front].copy_(out[:, :, held + front:held + front + 1].expand(-1, -1, front, -1, -1))
    if back:
        out[:, :, total - back:].copy_(out[:, :, total - back - 1:total - back].expand(-1, -1, back, -1, -1))
    return out


def depth_to_space(y: torch.Tensor, stride: tuple[int, int, int], channels: int, drop: int = 0,
                   skip: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``fastltx.layers.conv.depth_to_space(y + bias, stride)``, its channels repeated up to ``channels``,
    without its first ``drop`` frames; plus (``skip``) the same of another input. Channels-last output."""
    kernels = _triton()
    p1, p2, p3 = stride
    volume = p1 * p2 * p3
    b, cy, d, h, w = y.shape
    frames_out = d * p1 - drop
    out = torch.empty((b, channels, frames_out, h * p2, w * p3), device=y.device, dtype=y.dtype,
                      memory_format=torch.channels_last_3d)
    if out.numel() == 0:
        return out
    other = y if skip is None else skip
    rows = b * frames_out * h * p2 * w * p3
    block_c, rows_per = _rows_per_program(channels, D2S_ELEMENTS_PER_PROGRAM)
    kernels["depth_to_space"][(triton_cdiv(rows, rows_per),)](
        y, other, y if bias is None else bias, out, rows, channels, cy // volume, other.shape[1] // volume,
        frames_out, h * p2, w * p3, drop, *y.stride(), *other.stride(), *out.stride(),
        P1=p1, P2=p2, P3=p3, RESIDUAL=skip is not None, BIAS=bias is not None, ROWS=rows_per, BLOCK_C=block_c,
        num_warps=NUM_WARPS)
    return out


def add_bias_residual_(h: torch.Tensor, bias: torch.Tensor | None, skip: torch.Tensor) -> torch.Tensor:
    """``h += bias + skip`` (bias per channel), in one pass; ``h`` is returned."""
    if bias is None:
        return h.add_(skip)
    if h.shape != skip.shape:
        raise ValueError(f"residual shapes differ: {tuple(h.shape)} and {tuple(skip.shape)}")
    if h.numel() == 0:
        return h
    kernels = _triton()
    b, c, f, height, width = h.shape
    rows = b * f * height * width
    block_c, rows_per = _rows_per_program(c)
    kernels["add_bias_residual"][(triton_cdiv(rows, rows_per),)](
        h, skip, bias, rows, c, f, height, width, *h.stride(), *skip.stride(),
        ROWS=rows_per, BLOCK_C=block_c, num_warps=NUM_WARPS)
    return h


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b
