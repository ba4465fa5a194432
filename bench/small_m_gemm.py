"""Probe: the audio stream's linears (126 tokens, replicated on every rank of a sequence-parallel
step) are small-M GEMMs bound by reading their weights, yet run at ~30% of that bandwidth
(docs/benchmarks-multi-gpu.md, twelfth session). Would another kernel read them faster? For each
(K, N) of one 19B block's audio-side linears at M = 126, the time of ``F.linear`` (what the blocks
call), Inductor's compiled linear (default and ``max-autotune-no-cudagraphs``), and a split-K form
(``torch.bmm`` over S slices of K into float32, summed, bias added, cast): microseconds and the
weight bandwidth each reaches (TB/s: the weight's bytes over the time); then the 48 blocks' total
per variant. Every variant's output is
checked against a float64 product (max abs error printed). Timed as 20 calls recorded in one
CUDA graph (the host's launches left out, as in the graphed steps).

    python bench/small_m_gemm.py [--m 126] [--no-autotune]
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import time_cuda  # noqa: E402

SHAPES = {  # name: (K, N, how many a block), the audio-side linears of one 19B block (fused q/k/v, k/v)
    "self qkv": (2048, 6144, 1), "self out / text q / text out / v2a q / v2a out": (2048, 2048, 5),
    "a2v kv": (2048, 4096, 1), "ff in": (2048, 8192, 1), "ff out": (8192, 2048, 1)}


def split_k(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, s: int) -> torch.Tensor:
    m, k = x.shape
    parts = torch.bmm(x.view(m, s, k // s).transpose(0, 1), w.view(-1, s, k // s).permute(1, 2, 0),
                      out_dtype=torch.float32)  # (S, M, N)
    return (parts.sum(0) + b.float()).to(x.dtype)


def graphed(fn, n: int = 20):
    """``fn`` called ``n`` times, recorded in one CUDA graph: a replay (the host's launches out of the timing)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(n):
            fn()
    return graph.replay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=126)
    ap.add_argument("--no-autotune", action="store_true")
    args = ap.parse_args()
    m = args.m
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; M = {m}", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    names = ["F.linear", "compiled", *([] if args.no_autotune else ["autotune"]), "splitK2", "splitK4", "splitK8"]
    print(f"{'linear':<48}{'K x N':>12}" + "".join(f"{n:>26}" for n in names), flush=True)
    totals = dict.fromkeys(names, 0.0)
    compiled = torch.compile(F.linear, dynamic=False)
    tuned = None if args.no_autotune else torch.compile(F.linear, dynamic=False, mode="max-autotune-no-cudagraphs")
    for name, (k, n, count) in SHAPES.items():
        x = torch.randn(m, k, generator=g, device="cuda", dtype=torch.bfloat16)
        w = (torch.randn(n, k, generator=g, device="cuda") / k**0.5).to(torch.bfloat16)
        b = torch.randn(n, generator=g, device="cuda", dtype=torch.bfloat16) * 0.02
        exact = (x.double() @ w.double().t() + b.double())
        calls = {"F.linear": lambda: F.linear(x, w, b), "compiled": lambda: compiled(x, w, b),
                 "autotune": lambda: tuned(x, w, b), "splitK2": lambda: split_k(x, w, b, 2),
                 "splitK4": lambda: split_k(x, w, b, 4), "splitK8": lambda: split_k(x, w, b, 8)}
        cells = []
        for v in names:
            err = (calls[v]().double() - exact).abs().max().item()
            us = time_cuda(graphed(calls[v]), warmup=3, reps=20) * 1e3 / 20
            totals[v] += 48 * count * us / 1e3
            cells.append(f"{us:6.1f} us {w.numel() * 2 / us / 1e6:3.1f} TB/s e{err:.0e}".rjust(26))
        print(f"{name:<48}{f'{k}x{n}':>12}" + "".join(cells), flush=True)
    print("per forward (48 blocks): " + ", ".join(f"{v} {t:.2f} ms" for v, t in totals.items()), flush=True)


if __name__ == "__main__":
    main()
