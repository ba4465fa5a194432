"""The 19B transformer's blocks through CUDA graphs (``model.graph_blocks()``) against the compiled
blocks launched one kernel at a time: one forward (batch 1, text K/V cached) at the distilled stage
sizes, 1,536 video tokens (512x768's stage 1, host-bound) and 6,144 (its stage 2), compiled in bf16,
then with fp8 linears. Full-size random weights; median of ``--reps`` (CUDA events); the graphed
outputs against the plain ones (max abs difference: 0 expected, the same kernels replayed).

    python bench/cuda_graph.py [--reps 7]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import full_size_inputs, rel_l2, time_cuda  # noqa: E402
from fastltx.checkpoint.factory import random_transformer, transformer_config  # noqa: E402
from fastltx.runtime.compile import compile_blocks  # noqa: E402

GRIDS = {"1,536 tokens (256x384)": (16, 8, 12), "6,144 tokens (512x768)": (16, 16, 24)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--weights", default="bf16,fp8", help="which of bf16, fp8 (in that order)")
    args = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    cfg = transformer_config("v1", "19b")
    model = random_transformer(cfg, seed=0, device="cuda", dtype=torch.bfloat16)
    model.fuse_projections()
    calls = {}
    for name, grid in GRIDS.items():
        v, a = full_size_inputs(cfg, 1, "cuda", grid=grid)
        calls[name] = (v, a, model.cache_text(v, a))
    rows = []
    with torch.inference_mode():
        for weights in args.weights.split(","):
            if weights == "fp8":
                model.to_fp8()
            torch._dynamo.reset()
            compile_blocks(model)
            for name, (v, a, cache) in calls.items():
                model.graph_blocks(False)
                step = lambda: model(v, a, None, cache)  # noqa: E731
                start = time.perf_counter()
                want = step()
                torch.cuda.synchronize()
                first = time.perf_counter() - start
                plain = time_cuda(step, reps=args.reps)
                again = max((g.float() - w.float()).abs().max().item() for g, w in zip(step(), want))
                model.graph_blocks()
                start = time.perf_counter()
                step(), step()  # seen, then recorded
                torch.cuda.synchronize()
                record = time.perf_counter() - start
                graphed = time_cuda(step, reps=args.reps)
                got = step()
                diff = max((g.float() - w.float()).abs().max().item() for g, w in zip(got, want))
                err = max(rel_l2(g, w) for g, w in zip(got, want))
                rows.append((weights, name, plain, graphed, diff))
                print(f"{weights} {name}: compiled {plain:.1f} ms, graphed {graphed:.1f} ms ({graphed / plain:.3f}x); "
                      f"max |diff| {diff:.1e}, rel L2 {err:.1e} (plain vs plain: {again:.1e}); first call {first:.1f} s, recording {record:.1f} s; "
                      f"memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak", flush=True)
            model.graph_blocks(False)
    print("\nweights  tokens                   compiled ms  graphed ms  ratio  max|diff|")
    for weights, name, plain, graphed, diff in rows:
        print(f"{weights:<8} {name:<24} {plain:>11.1f} {graphed:>11.1f} {graphed / plain:>6.3f}  {diff:.1e}")


if __name__ == "__main__":
    main()
