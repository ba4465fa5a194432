"""The 19B video decoder's convolutions alone, in each layout cuDNN can run them: which is fastest.

Every distinct 3x3x3 convolution of a 121-frame decode (bf16, random data), per stage, as
* ``ncdhw``: plain layout, zero padding by cuDNN (ltx-core's layout; its reflect padding is a copy before);
* ``cl``: channels-last, input already padded (fastltx's fused path);
* ``cl+bench``: the same with ``cudnn.benchmark`` (cuDNN times its algorithms on first use);
* ``2d``: three 2-D convolutions over frame-shifted views of the channels-last input, summed.
Prints ms and TFLOP/s per convolution and the decode's total convolution time per variant.

    python bench/video_vae_convs.py [--sizes 512x768,1024x1536]
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import time_cuda  # noqa: E402

CL = torch.channels_last_3d


def decoder_convs(height: int, width: int, frames: int = 121) -> list[tuple[str, int, int, int, int, int, int]]:
    """(name, count, c_in, c_out, frames, h, w) of the v1 19B decoder's convolutions (output frames)."""
    f, h, w = (frames - 1) // 8 + 1, height // 32, width // 32
    out = [("conv_in", 1, 128, 1024, f, h, w)]
    c = 1024
    for stage in range(4):
        out.append((f"res {c}", 10, c, c, f, h, w))
        if stage < 3:
            out.append((f"up {c}", 1, c, 4 * c, f, h, w))
            c, f, h, w = c // 2, 2 * f - 1, 2 * h, 2 * w
    out.append(("conv_out", 1, 128, 48, f, h, w))
    return out


def variants(c_in, c_out, f, h, w):
    x = torch.randn(1, c_in, f + 2, h + 2, w + 2, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(c_out, c_in, 3, 3, 3, device="cuda", dtype=torch.bfloat16) * (c_in * 27) ** -0.5
    bias = torch.zeros(c_out, device="cuda", dtype=torch.bfloat16)
    x_plain = x[:, :, :, 1:-1, 1:-1].contiguous()
    x_cl, w_cl = x.contiguous(memory_format=CL), weight.contiguous(memory_format=CL)
    frames2d = x_cl.permute(0, 2, 1, 3, 4).reshape(f + 2, c_in, h + 2, w + 2)  # a view: (frames, C, H, W) NHWC
    w2d = [weight[:, :, k].contiguous(memory_format=torch.channels_last) for k in range(3)]

    def two_d():
        y = F.conv2d(frames2d[0:f], w2d[0], bias)
        y += F.conv2d(frames2d[1:f + 1], w2d[1])
        y += F.conv2d(frames2d[2:f + 2], w2d[2])
        return y
    return {"ncdhw": lambda: F.conv3d(x_plain, weight, bias, padding=(0, 1, 1)),
            "cl": lambda: F.conv3d(x_cl, w_cl, bias),
            "cl+bench": lambda: F.conv3d(x_cl, w_cl, bias),
            "2d": two_d}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512x768,1024x1536")
    args = parser.parse_args(argv)
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        totals = {}
        print(f"\n{size}: {'conv':<12} {'n':>3} " + " ".join(f"{v:>16}" for v in ("ncdhw", "cl", "cl+bench", "2d")))
        for name, count, c_in, c_out, f, h, w in decoder_convs(height, width):
            flop = 2 * 27 * c_in * c_out * f * h * w
            cells = []
            with torch.inference_mode():
                for variant, fn in variants(c_in, c_out, f, h, w).items():
                    torch.backends.cudnn.benchmark = variant == "cl+bench"
                    ms = time_cuda(fn, warmup=2, reps=5)
                    totals[variant] = totals.get(variant, 0.0) + count * ms
                    cells.append(f"{ms:7.2f} ms {flop / ms / 1e9:4.0f}T")
            torch.backends.cudnn.benchmark = False
            torch.cuda.empty_cache()
            print(f"{size}: {name:<12} {count:>3} " + " ".join(f"{c:>16}" for c in cells))
        print(f"{size}: {'total ms':<16} " + " ".join(f"{totals[v]:>16.1f}" for v in totals))


if __name__ == "__main__":
    main()
