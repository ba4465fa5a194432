"""The fp8 feed-forward's middle at the 19B shape (6,144 x 16,384 bf16 hidden): bias + GELU(tanh) +
per-row amax + e4m3 cast, composed eager, composed under torch.compile (Inductor's fusion, what
compiled fp8 blocks ran before the op), and the one-pass Triton kernel at several warp counts.
Prints microseconds a call, effective GB/s (3 bytes an element: read bf16, write e4m3), how many
e4m3 codes differ from the eager composition and the error of the dequantised result against the
exact (float64) GELU of the biased hidden.

    python bench/gelu_quant.py [--rows 6144] [--cols 16384]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import time_cuda  # noqa: E402
from fastltx.layers import fp8_gelu  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=6144)
    p.add_argument("--cols", type=int, default=16384)
    args = p.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(args.rows, args.cols, generator=g, device="cuda").mul_(2).to(torch.bfloat16)
    b = (torch.randn(args.cols, generator=g, device="cuda") * 0.1).to(torch.bfloat16)
    want = fp8_gelu.composed(h, b)
    compiled = torch.compile(fp8_gelu.composed)
    variants = {"eager composed": lambda: fp8_gelu.composed(h, b), "Inductor composed": lambda: compiled(h, b)}
    for w in (4, 8, 16, 32):
        variants[f"Triton, {w} warps"] = lambda w=w: fp8_gelu._fused(h, b, num_warps=w)
    variants["op (default warps)"] = lambda: fp8_gelu.gelu_quantize_rows(h, b)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {args.rows} x {args.cols}", flush=True)
    nbytes = 3 * h.numel()
    x = (h + b).double()
    exact = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    del x
    for name, fn in variants.items():
        q, s = fn()
        diff = (q.view(torch.uint8).int() - want[0].view(torch.uint8).int()).abs()
        err = ((q.double() * s.double() - exact).norm() / exact.norm()).item()
        ms = time_cuda(fn, warmup=3, reps=20)
        print(f"{name:<22} {ms * 1000:8.1f} us  {nbytes / ms / 1e6:7.0f} GB/s  codes differing {(diff > 0).float().mean():.1e}"
              f" (max {diff.max().item()})  scales max rel diff {((s - want[1]).abs() / want[1]).max():.1e}"
              f"  rel L2 vs exact GELU {err:.4e}", flush=True)


if __name__ == "__main__":
    main()
