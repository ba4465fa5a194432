"""Probe: the bf16 GEMMs of one 19B block at 6,144 video tokens, by layout. In the compiled bf16
profile the feed-forward GEMMs run at ~820 TFLOP/s and the attention projections at ~640: is that
the shapes, or the (N, K) weight layout cuBLAS is handed (``F.linear``), and would a (K, N) copy of
the weight, or the bias outside the GEMM, pick a faster kernel? Prints TFLOP/s per shape and layout
and the forward-level difference (48 blocks) against ``F.linear``.

    python bench/gemm_shapes.py [--m 6144,3840,15360]

``--m``: the rows (tokens) to measure, each in turn (3,840 and 15,360: a 4-GPU rank's and one GPU's
stage-2 step at 768x1280).
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import time_cuda  # noqa: E402

M = 6144
SHAPES = {  # name: (K, N) of the video-side linears of one block (fused q/k/v and k/v), 19B geometry
    "self-attn qkv": (4096, 12288), "self-attn out": (4096, 4096), "text q": (4096, 4096), "text out": (4096, 4096),
    "a2v q": (4096, 2048), "v2a kv": (4096, 4096), "a2v out": (2048, 4096), "ff in": (4096, 16384), "ff out": (16384, 4096)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", default=str(M), help="rows, comma-separated")
    for m in (int(x) for x in ap.parse_args().m.split(",")):
        measure(m)


def measure(M: int) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; M = {M}", flush=True)
    print(f"{'linear':<15}{'K x N':>13}" + "".join(f"{n:>14}" for n in ("F.linear", "no bias", "addmm (K,N)", "mm (K,N)")))
    totals = [0.0] * 4
    for name, (k, n) in SHAPES.items():
        x = torch.randn(M, k, generator=g, device="cuda", dtype=torch.bfloat16)
        w = (torch.randn(n, k, generator=g, device="cuda") / k**0.5).to(torch.bfloat16)
        b = torch.randn(n, generator=g, device="cuda", dtype=torch.bfloat16) * 0.02
        wt = w.t().contiguous()
        calls = [lambda: F.linear(x, w, b), lambda: F.linear(x, w), lambda: torch.addmm(b, x, wt), lambda: torch.mm(x, wt)]
        ms = [time_cuda(c, warmup=3, reps=15) for c in calls]
        flop = 2 * M * k * n
        totals = [t + 48 * m for t, m in zip(totals, ms)]
        print(f"{name:<15}{f'{k}x{n}':>13}" + "".join(f"{flop / m / 1e9:>9.0f} TF/s" for m in ms), flush=True)
    print("per forward (48 blocks): " + ", ".join(f"{t:.1f} ms" for t in totals), flush=True)


if __name__ == "__main__":
    main()
