"""One transformer forward at full 19B size: fastltx vs ltx-core (and diffusers when installed).

Random bf16 weights, 121 frames at 512x768 (6,144 video tokens), 126 audio tokens, 1,024 text
tokens; batch 1 and 2. ltx-core runs on the very same weight tensors and inputs, and our output is
checked against it (relative L2) so that speed never costs correctness. Diffusers runs afterwards
on its own random weights (two 38 GB copies do not fit one card). Prints the card, median times,
ratios, peak memory above the weights and achieved TFLOP/s.

    python bench/transformer.py [--reps 7] [--no-diffusers]
"""

import argparse
import gc
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import (full_size_inputs, peak_mib, reference_modality, reference_on_weights,  # noqa: E402
                          rel_l2, time_cuda)
from fastltx.checkpoint.factory import random_transformer, transformer_config  # noqa: E402


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def diffusers_rows(batch_sizes, reps):
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
    for b in batch_sizes:
        g = torch.Generator(device="cuda").manual_seed(1)
        args = dict(
            hidden_states=torch.randn(b, 6144, 128, generator=g, device="cuda", dtype=torch.bfloat16),
            audio_hidden_states=torch.randn(b, 126, 128, generator=g, device="cuda", dtype=torch.bfloat16),
            encoder_hidden_states=torch.randn(b, 1024, 3840, generator=g, device="cuda", dtype=torch.bfloat16),
            audio_encoder_hidden_states=torch.randn(b, 1024, 3840, generator=g, device="cuda", dtype=torch.bfloat16),
            timestep=torch.full((b,), 700.0, device="cuda"), num_frames=16, height=16, width=24, fps=24.0,
            audio_num_frames=126, return_dict=False)
        with torch.inference_mode():
            fn = lambda: model(**args)  # noqa: E731
            out[b] = (time_cuda(fn, reps=reps), peak_mib(fn))
    del model
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-diffusers", action="store_true")
    parser.add_argument("--backend", default=None, help="attention backend for fastltx (default: PyTorch's choice)")
    args = parser.parse_args()
    card = torch.cuda.get_device_name()
    print(f"card: {card}, torch {torch.__version__}")
    cfg = transformer_config("v1", "19b")
    ours = random_transformer(cfg, seed=0, device="cuda", dtype=torch.bfloat16)
    ours.set_attention_backend(args.backend)
    ref = reference_on_weights(cfg, ours)
    print(f"weights: {torch.cuda.memory_allocated() / 2**30:.1f} GiB (shared by fastltx and ltx-core)")
    rows = []
    for b in (1, 2):
        v, a = full_size_inputs(cfg, b, "cuda")
        rv, ra = reference_modality(v), reference_modality(a)
        with torch.inference_mode():
            ov_out, oa_out = ours(v, a)
            rv_out, ra_out = ref(rv, ra, None)
            errs = (rel_l2(ov_out, rv_out), rel_l2(oa_out, ra_out))
            del ov_out, oa_out, rv_out, ra_out
            t_ours = time_cuda(lambda: ours(v, a), reps=args.reps)
            t_ref = time_cuda(lambda: ref(rv, ra, None), reps=args.reps)
            m_ours, m_ref = peak_mib(lambda: ours(v, a)), peak_mib(lambda: ref(rv, ra, None))
            flops = count_flops(lambda: ours(v, a))
        rows.append((b, t_ours, t_ref, m_ours, m_ref, flops, errs))
    del ours, ref
    gc.collect()
    torch.cuda.empty_cache()
    diff = {} if args.no_diffusers else diffusers_rows((1, 2), args.reps)

    print(f"\n{'batch':>5} {'fastltx ms':>11} {'ltx-core ms':>12} {'diffusers ms':>13} {'ratio vs core':>14} "
          f"{'ratio vs diff':>14} {'TFLOP/s':>8} {'peak MiB ours/core/diff':>24} {'rel L2 video/audio':>20}")
    for b, t_o, t_r, m_o, m_r, flops, (ev, ea) in rows:
        t_d, m_d = diff.get(b, (float("nan"), float("nan")))
        print(f"{b:>5} {t_o:>11.1f} {t_r:>12.1f} {t_d:>13.1f} {t_o / t_r:>14.3f} {t_o / t_d:>14.3f} "
              f"{flops / t_o / 1e9:>8.0f} {f'{m_o:.0f}/{m_r:.0f}/{m_d:.0f}':>24} {f'{ev:.2e}/{ea:.2e}':>20}")
    print(f"(FLOPs per forward, batch 1: {rows[0][5] / 1e12:.1f} T; card: {card})")


if __name__ == "__main__":
    main()
