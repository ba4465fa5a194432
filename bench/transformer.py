"""One transformer forward at full 19B size: fastltx vs ltx-core (and diffusers when installed).

Random bf16 weights, 121 frames at 512x768 (6,144 video tokens), 126 audio tokens, 1,024 text
tokens; batch 1 and 2. ltx-core runs on the very same weight tensors and inputs, and every fastltx
variant is checked against it (relative L2) so that speed never costs correctness. The variants are
applied cumulatively, each timed on its own: eager, + torch.compile of the blocks (cold compile
time printed), + fused projections, + text K/V cached per generation, + fp8 linears (the feed-forward
middle as one op; then as composed ops fused by Inductor, to compare), then the eager fp8 forms.
Diffusers runs last on its own random weights (two 38 GB copies do not fit one card). Prints the card, median times, ratios, peak memory
above the weights and achieved TFLOP/s.

    python bench/transformer.py [--reps 7] [--no-diffusers] [--tuned] [--backend cudnn] [--profile-dir DIR]
"""

import argparse
import gc
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (full_size_inputs, peak_mib, reference_modality, reference_on_weights,  # noqa: E402
                          rel_l2, time_cuda)
from fastltx.checkpoint.factory import random_transformer, transformer_config  # noqa: E402
from fastltx.runtime.compile import compile_blocks, uncompile_blocks  # noqa: E402

BATCHES = (1, 2)


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def diffusers_times(reps):
    """Diffusers' LTX2VideoTransformer3DModel at the 19B geometry on its own random weights."""
    try:
        from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
    except Exception as e:  # noqa: BLE001
        print(f"diffusers: not available ({type(e).__name__}: {e})")
        return {}
    with torch.device("meta"):
        model = LTX2VideoTransformer3DModel(rope_type="split", use_prompt_adaln_single=False)
    model = model.to_empty(device="cuda").to(torch.bfloat16).eval().requires_grad_(False)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for p in model.parameters():
        p.copy_(torch.randn(p.shape, generator=gen, device="cuda") * (p.shape[-1] ** -0.5 if p.ndim > 1 else 0.02))
    out = {}
    for b in BATCHES:
        g = torch.Generator(device="cuda").manual_seed(1)
        rand = lambda *s: torch.randn(*s, generator=g, device="cuda", dtype=torch.bfloat16)  # noqa: E731
        args = dict(hidden_states=rand(b, 6144, 128), audio_hidden_states=rand(b, 126, 128),
                    encoder_hidden_states=rand(b, 1024, 3840), audio_encoder_hidden_states=rand(b, 1024, 3840),
                    timestep=torch.full((b,), 700.0, device="cuda"), num_frames=16, height=16, width=24, fps=24.0,
                    audio_num_frames=126, return_dict=False)
        with torch.inference_mode():
            out[b] = (time_cuda(lambda: model(**args), reps=reps), peak_mib(lambda: model(**args)))
    del model
    return out


def profile_table(fn, path: Path) -> None:
    """Write the CUDA-time table of one call of ``fn`` to ``path``."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90))


def run_fastltx_and_core(args, results: dict, flops: dict) -> None:
    """Time ltx-core and the cumulative fastltx variants on shared weights (all freed on return)."""
    cfg = transformer_config("v1", "19b")
    ours = random_transformer(cfg, seed=0, device="cuda", dtype=torch.bfloat16)
    ours.set_attention_backend(args.backend)
    ref = reference_on_weights(cfg, ours)
    print(f"weights: {torch.cuda.memory_allocated() / 2**30:.1f} GiB (shared by fastltx and ltx-core)", flush=True)
    inputs = {b: full_size_inputs(cfg, b, "cuda") for b in BATCHES}
    ref_out, use_cache = {}, [False]
    for b, (v, a) in inputs.items():
        rv, ra = reference_modality(v), reference_modality(a)
        ref_out[b] = ref(rv, ra, None)
        results["ltx-core", b] = (time_cuda(lambda: ref(rv, ra, None), reps=args.reps),
                                  peak_mib(lambda: ref(rv, ra, None)), (0.0, 0.0))
        flops[b] = count_flops(lambda: ours(v, a))
    print("ltx-core: " + ", ".join(f"b{b} {results['ltx-core', b][0]:.1f} ms" for b in BATCHES), flush=True)

    def measure(name):
        for b, (v, a) in inputs.items():
            cache = ours.cache_text(v, a) if use_cache[0] else None
            call = lambda: ours(v, a, None, cache)  # noqa: E731
            ov, oa = call()
            errs = (rel_l2(ov, ref_out[b][0]), rel_l2(oa, ref_out[b][1]))
            del ov, oa
            results[name, b] = (time_cuda(call, reps=args.reps), peak_mib(call), errs)
            if args.profile_dir and b == 1:
                profile_table(call, Path(args.profile_dir) / f"profile_{len(results)}.txt")
        print(f"{name}: " + ", ".join(f"b{b} {results[name, b][0]:.1f} ms" for b in BATCHES), flush=True)

    def cold_call():
        torch._dynamo.reset()  # each variant compiles afresh (and stays clear of the recompile limit)
        v, a = inputs[1]
        start = time.perf_counter()
        ours(v, a, None, ours.cache_text(v, a) if use_cache[0] else None)
        torch.cuda.synchronize()
        print(f"first call after the change (compile), batch 1: {time.perf_counter() - start:.1f} s", flush=True)

    steps = [("fastltx eager", lambda: None), ("+ torch.compile", lambda: (compile_blocks(ours), cold_call())),
             ("+ fused qkv/kv", lambda: (ours.fuse_projections(), cold_call())),
             ("+ cached text k/v", lambda: (use_cache.__setitem__(0, True), torch._dynamo.reset())),
             ("+ tuned kernels", lambda: (compile_blocks(ours, tune=True), cold_call())),
             # eager with the same fusions and cache: the baseline of the two eager fp8 forms below
             ("eager, fused+cached", lambda: (uncompile_blocks(ours), torch._dynamo.reset())),
             ("+ fp8 linears", lambda: (print(f"fp8 linears: {ours.to_fp8()}"), compile_blocks(ours), cold_call())),
             ("+ fp8, tuned kernels", lambda: (compile_blocks(ours, tune=True), cold_call())),
             # the FF middle as composed ops (fused by Inductor) instead of the one-pass GELU + quantisation op
             ("fp8, Inductor's GELU", lambda: (composed_feed_forward(True), compile_blocks(ours), cold_call())),
             ("eager fp8 matmuls", lambda: (composed_feed_forward(False), uncompile_blocks(ours), torch._dynamo.reset())),
             # the same fp8 buffers, dequantised for bf16 matmuls: what eager runs use (fp8_weight_only)
             ("eager fp8 weights", lambda: weights_only(ours)),
             # the same, dequantised by PyTorch's two passes instead of the one-pass Triton kernel
             ("eager fp8 w 2-pass", two_pass_dequantisation)]
    if not args.tuned:
        steps = [step for step in steps if "tuned" not in step[0]]
    for name, change in steps:
        try:
            change()
            measure(name)
        except Exception as e:  # noqa: BLE001 - report and stop the cumulative chain
            print(f"{name}: failed: {type(e).__name__}: {str(e)[:500]}", flush=True)
            break
    torch._dynamo.reset()


def composed_feed_forward(on: bool) -> None:
    """The fp8 feed-forward as its modules (``on``) or with its one-op middle (the default)."""
    import torch.nn.functional as F
    from fastltx.layers import fp8_gelu, mlp
    mlp.fp8_feed_forward = ((lambda x, first, last: last(F.gelu(first(x), approximate="tanh"))) if on
                            else fp8_gelu.fp8_feed_forward)


def two_pass_dequantisation() -> None:
    from fastltx.layers import linear
    linear.DEQUANT.enabled = False  # the last variant: not restored


def weights_only(model) -> None:
    """Fp8Linear -> Fp8WeightLinear in place (the same buffers; the product in the run dtype)."""
    from fastltx.layers.linear import Fp8Linear, Fp8WeightLinear
    for m in model.modules():
        if type(m) is Fp8Linear:
            m.__class__ = Fp8WeightLinear


def print_table(results: dict, flops: dict, card: str) -> None:
    names = list(dict.fromkeys(n for n, _ in results))
    print(f"\n{'variant':<20}{'batch':>6}{'ms':>9}{'/ltx-core':>10}{'/diffusers':>11}{'TFLOP/s':>9}"
          f"{'peak MiB':>10}{'rel L2 video / audio':>23}")
    for name in names:
        for b in BATCHES:
            if (name, b) not in results:
                continue
            t, m, (ev, ea) = results[name, b]
            core = results["ltx-core", b][0]
            diff = results.get(("diffusers", b), (float("nan"),))[0]
            print(f"{name:<20}{b:>6}{t:>9.1f}{t / core:>10.3f}{t / diff:>11.3f}{flops[b] / t / 1e9:>9.0f}"
                  f"{m:>10.0f}{f'{ev:.2e} / {ea:.2e}':>23}")
    print(f"(FLOPs per forward at batch 1: {flops[1] / 1e12:.1f} T; card: {card})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-diffusers", action="store_true")
    parser.add_argument("--backend", default=None, help="attention backend for fastltx (default: PyTorch's choice)")
    parser.add_argument("--tuned", action="store_true", help="also the coordinate-descent tuned variants (+1-2 min)")
    parser.add_argument("--profile-dir", default=None, help="write a CUDA kernel table per variant (batch 1) here")
    args = parser.parse_args()
    card = torch.cuda.get_device_name()
    print(f"card: {card}, torch {torch.__version__}", flush=True)
    results, flops = {}, {}  # (name, batch) -> (ms, peak MiB, (rel L2 video, audio)); batch -> FLOPs
    with torch.inference_mode():
        run_fastltx_and_core(args, results, flops)
    gc.collect()
    torch.cuda.empty_cache()
    print_table(results, flops, card)
    if not args.no_diffusers:
        for b, (t, m) in diffusers_times(args.reps).items():
            results["diffusers", b] = (t, m, (float("nan"), float("nan")))
        print_table(results, flops, card)


if __name__ == "__main__":
    main()
