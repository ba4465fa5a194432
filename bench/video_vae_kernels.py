"""The fused video kernels alone at the 19B decoder's 1024x1536 shapes: achieved bandwidth per launch setting.

``norm_act_pad`` (bias, PixelNorm, modulation, SiLU, reflect padding, one frame of temporal padding
each side) at every stage width, ``add_bias_residual_`` and ``depth_to_space`` (residual upsampler)
at the widest stage; GB/s counts each input read once and the output written once. A device copy
(``clone``) of the stage-4 activation gives the ceiling.

    python bench/video_vae_kernels.py
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import time_cuda  # noqa: E402
from fastltx.layers import fused_video  # noqa: E402
from fastltx.layers.norm_act import NormAct  # noqa: E402

CL = torch.channels_last_3d
STAGES = ((128, 121, 256, 384), (256, 61, 128, 192), (512, 31, 64, 96), (1024, 16, 32, 48))
SETTINGS = ((2048, 4), (4096, 4), (4096, 8), (8192, 8), (16384, 8))


def randn_cl(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=CL)


def gbps(nbytes: int, ms: float) -> float:
    return nbytes / ms / 1e6


def main():
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    x = randn_cl(1, *STAGES[0])
    copy_ms = time_cuda(lambda: x.clone(memory_format=CL), 2, 10)
    print(f"clone of the stage-4 activation ({x.numel() * 2 / 1e9:.2f} GB): {copy_ms:.2f} ms, "
          f"{gbps(2 * x.numel() * 2, copy_ms):.0f} GB/s")
    del x
    print(f"{'kernel':<34}" + "".join(f"{f'{e}/{w}w':>16}" for e, w in SETTINGS))
    defaults = fused_video.ELEMENTS_PER_PROGRAM, fused_video.NUM_WARPS, fused_video.D2S_ELEMENTS_PER_PROGRAM
    cases = []
    for c, f, h, w in STAGES:
        x = randn_cl(1, c, f, h, w)
        act = NormAct(torch.randn(1, c, 1, 1, 1, device="cuda", dtype=torch.bfloat16) * 0.1,
                      torch.randn(1, c, 1, 1, 1, device="cuda", dtype=torch.bfloat16) * 0.1,
                      bias=torch.randn(c, device="cuda", dtype=torch.bfloat16))
        nbytes = (x.numel() + c * (f + 2) * (h + 2) * (w + 2)) * 2
        cases.append((f"norm_act_pad C={c}", lambda x=x, act=act: fused_video.norm_act_pad(x, act, 1, 1, 1, "reflect"),
                      nbytes))
    c, f, h, w = STAGES[0]
    hh, skip = randn_cl(1, c, f, h, w), randn_cl(1, c, f, h, w)
    bias = torch.randn(c, device="cuda", dtype=torch.bfloat16)
    cases.append(("add_bias_residual_ C=128", lambda: fused_video.add_bias_residual_(hh, bias, skip),
                  3 * hh.numel() * 2))
    y, xin = randn_cl(1, 1024, 61, 128, 192), randn_cl(1, 256, 61, 128, 192)
    cases.append(("depth_to_space residual 1024->128",
                  lambda: fused_video.depth_to_space(y, (2, 2, 2), 128, 1, xin, bias),
                  (y.numel() + xin.numel() + 128 * 121 * 256 * 384) * 2))
    for name, fn, nbytes in cases:
        cells = []
        for elements, warps in SETTINGS:
            fused_video.ELEMENTS_PER_PROGRAM, fused_video.NUM_WARPS = elements, warps
            fused_video.D2S_ELEMENTS_PER_PROGRAM = elements
            ms = time_cuda(fn, 2, 10)
            cells.append(f"{ms:6.2f}ms {gbps(nbytes, ms):5.0f}")
        print(f"{name:<34}" + "".join(f"{cell:>16}" for cell in cells))
    fused_video.ELEMENTS_PER_PROGRAM, fused_video.NUM_WARPS, fused_video.D2S_ELEMENTS_PER_PROGRAM = defaults


if __name__ == "__main__":
    with torch.inference_mode():
        main()
