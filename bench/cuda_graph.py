"""The 19B transformer's blocks through CUDA graphs (``model.graph_blocks()``) against the compiled
blocks launched one kernel at a time: one forward (batch 1, text K/V cached) at the distilled stage
sizes, 1,536 video tokens (512x768's stage 1, host-bound) and 6,144 (its stage 2), compiled in bf16,
then with fp8 linears. Full-size random weights; median of ``--reps`` (CUDA events); the graphed
outputs against the plain ones (max abs difference: 0 expected, the same kernels replayed).

``--fp8-ff op,inductor``: the fp8 feed-forward's middle as the ``fastltx::gelu_quantize_rows`` op
(what the model does) and/or as plain ops fused by Inductor (what it did before the op); each also
reports the host's share: milliseconds until the step returns, before the device is waited for.

    python bench/cuda_graph.py [--reps 7] [--weights bf16,fp8] [--fp8-ff op,inductor] [--tokens 1536,6144]
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


def inductor_feed_forward(x, first, last):
    """The fp8 feed-forward as its two modules around a plain GELU (Inductor fuses the middle)."""
    return last(torch.nn.functional.gelu(first(x), approximate="tanh"))


def host_ms(step, reps: int) -> float:
    """Median milliseconds until ``step()`` returns (the host launching it), the device idle before."""
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    torch.cuda.synchronize()
    return sorted(times)[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--weights", default="bf16,fp8", help="which of bf16, fp8 (in that order)")
    p.add_argument("--fp8-ff", default="op", help="fp8 feed-forward middle: op and/or inductor")
    p.add_argument("--tokens", default="1536,6144", help="which sizes: 1536 and/or 6144")
    args = p.parse_args()
    from fastltx.layers import mlp
    from fastltx.models.transformer import model as transformer_module
    transformer_module.GRAPH_MAX_TOKENS = 1 << 30  # graphs at every size here (the model: small passes only)
    ours = mlp.fp8_feed_forward
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    cfg = transformer_config("v1", "19b")
    model = random_transformer(cfg, seed=0, device="cuda", dtype=torch.bfloat16)
    model.fuse_projections()
    calls = {}
    for name, grid in GRIDS.items():
        if name.split(" ")[0].replace(",", "") not in args.tokens.split(","):
            continue
        v, a = full_size_inputs(cfg, 1, "cuda", grid=grid)
        calls[name] = (v, a, model.cache_text(v, a))
    rows = []
    with torch.inference_mode():
        variants = [(w, ff) for w in args.weights.split(",") for ff in (args.fp8_ff.split(",") if w == "fp8" else [""])]
        converted = False
        for weights, ff in variants:
            if weights == "fp8" and not converted:
                model.to_fp8()
                converted = True
            mlp.fp8_feed_forward = inductor_feed_forward if ff == "inductor" else ours
            weights = f"{weights} {ff}".strip()
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
                host = host_ms(step, args.reps)
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
                print(f"{weights} {name}: compiled {plain:.1f} ms (host {host:.1f} ms), graphed {graphed:.1f} ms ({graphed / plain:.3f}x); "
                      f"max |diff| {diff:.1e}, rel L2 {err:.1e} (plain vs plain: {again:.1e}); first call {first:.1f} s, recording {record:.1f} s; "
                      f"memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak", flush=True)
            model.graph_blocks(False)
    print("\nweights       tokens                   compiled ms  graphed ms  ratio  max|diff|")
    for weights, name, plain, graphed, diff in rows:
        print(f"{weights:<13} {name:<24} {plain:>11.1f} {graphed:>11.1f} {graphed / plain:>6.3f}  {diff:.1e}")


if __name__ == "__main__":
    main()
