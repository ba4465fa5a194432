"""Video VAE decode at full LTX-2 19B size: fastltx vs ltx-core, time and peak GPU memory.

Random bf16 weights in the 19B decoder layout (timestep-conditioned, 552.8 M parameters), 121
frames (16 latent frames) at 512x768 and 1024x1536, decoded to uint8 frames as the pipelines do
(``decode_video``), untiled and with the reference's default tiling (512/64 px, 64/24 frames).
ltx-core runs on the very same weight tensors; fastltx runs on its own copy (channels-last on
CUDA, the loader's default, plus the plain layout for comparison). fastltx's modes:

* ``one pass``: the untiled decode (same result as ltx-core's untiled decode);
* ``tiled``: the reference's tiling, reproduced (same result as ltx-core's tiled decode);
* ``auto, 4 GiB``: ``decode_video(tiling="auto", memory_budget=4 GiB)``: one pass if it fits, else
  the exact untiled result streamed over latent chunks (``Streaming``); this is the bounded-memory
  mode the issue's "tiled decode within 4 GiB" target is about;
* ``streamed, 2 frames``: ``Streaming(2)`` (channels-last only), the next chunk size up.

Each fastltx row is checked against the ltx-core row it reproduces (uint8 frames: largest
difference and share of differing values). Prints the card, median times, peak memory above the
weights, the auto plan and its memory estimate next to the measured peak.

    python bench/video_vae.py [--reps 3] [--budget-gib 4] [--cudnn-benchmark] [--sizes 512x768,1024x1536]
    python bench/video_vae.py --device cpu --size tiny --sizes 64x96 --frames 17 --reps 1   # dry run
"""

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import peak_mib, time_cuda  # noqa: E402
from fastltx.checkpoint.factory import random_state  # noqa: E402
from fastltx.layers.conv import to_channels_last  # noqa: E402
from fastltx.models.video_vae import Tiling, VideoDecoder, decode_video  # noqa: E402
from fastltx.models.video_vae.decode import resolve_plan  # noqa: E402
from fastltx.models.video_vae.layouts import adjust_tensor, vae_config  # noqa: E402
from fastltx.models.video_vae.memory import (Streaming, estimate_decode_bytes,  # noqa: E402
                                             estimate_tiled_bytes)

GIB = 2**30


def random_decoder(version: str = "v1", size: str = "19b", seed: int = 0, device="cpu",
                   dtype: torch.dtype = torch.bfloat16) -> VideoDecoder:
    """A decoder of a released (or tiny) layout with the factory's random weights, built in memory."""
    cfg = vae_config(version, size).decoder
    with torch.device("meta"):
        model = VideoDecoder(cfg)
    state = {k: adjust_tensor(k, t) for k, t in random_state(model, seed, device, dtype).items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def reference_decoder_on_weights(version: str, size: str, ours: VideoDecoder):
    """ltx-core's VideoDecoder sharing ``ours``' tensors (built by its own configurator)."""
    from ltx_core.model.video_vae import VideoDecoderConfigurator
    with torch.device("meta"):
        ref = VideoDecoderConfigurator.from_config({"vae": vae_config(version, size).to_checkpoint_section()})
    ref.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return ref.eval().requires_grad_(False)


def random_latent(height: int, width: int, frames: int, device, dtype=torch.bfloat16, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (1, 128, (frames - 1) // 8 + 1, height // 32, width // 32)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)


@dataclass(frozen=True)
class Case:
    size: tuple[int, int]
    tiled: bool  # the reference decodes with TilingConfig.default()

    @property
    def name(self) -> str:
        return f"{self.size[0]}x{self.size[1]}, {'default tiling' if self.tiled else 'untiled'}"


def cases(sizes: list[tuple[int, int]]) -> list[Case]:
    return [Case(s, tiled) for s in sizes for tiled in (False, True)]


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--sizes", default="512x768,1024x1536", help="comma-separated HxW")
    parser.add_argument("--budget-gib", type=float, default=4.0, help="memory budget of the streamed mode")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN pick algorithms (both sides)")
    parser.add_argument("--version", choices=("v1", "v2"), default="v1", help="v1: LTX-2 19B layout, v2: LTX-2.3")
    parser.add_argument("--size", choices=("19b", "tiny"), default="19b", help="tiny: a dry run of the script")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run (wall-clock times, no memory figures)")
    args = parser.parse_args(argv)
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    return args


def timer(device: str):
    """(time in ms, peak MiB above the start) of a function: CUDA events and the allocator's peak on
    the GPU; wall-clock time and no memory figure elsewhere (dry runs)."""
    if device.startswith("cuda"):
        return lambda fn, warmup, reps: (time_cuda(fn, warmup, reps), peak_mib(fn))

    def measure(fn, warmup, reps):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), float("nan")
    return measure


def _frames(decode) -> torch.Tensor:
    """All uint8 frames of a decode, on the CPU (for the agreement check, outside the timed runs)."""
    return torch.cat([chunk.cpu() for chunk in decode()])


def agreement(ours: torch.Tensor, ref: torch.Tensor) -> str:
    if ours.shape != ref.shape:
        return f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    diff = (ours.int() - ref.int()).abs()
    return f"max {diff.max().item()}, {(diff > 0).float().mean().item() * 100:.2f}% differ"


def main(argv=None) -> list[tuple]:
    args = parse_args(argv)
    from ltx_core.model.video_vae import TilingConfig
    from ltx_core.model.video_vae import decode_video as ref_decode_video

    device, cuda = args.device, args.device.startswith("cuda")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    card = torch.cuda.get_device_name(device) if cuda else "cpu (dry run)"
    print(f"card: {card}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"cudnn.benchmark={args.cudnn_benchmark}")
    ours = random_decoder(args.version, args.size, device=device)
    ref = reference_decoder_on_weights(args.version, args.size, ours)
    ours_cl = to_channels_last(random_decoder(args.version, args.size, device=device))  # same values, own copy
    if cuda:
        print(f"weights: {torch.cuda.memory_allocated(device) / GIB:.2f} GiB (ltx-core shares the first copy)")
    budget = int(args.budget_gib * GIB)
    measure = timer(device)

    def gen():
        return torch.Generator(device=device).manual_seed(0)

    def consume(it):
        for _ in it:
            pass

    rows = []
    if cuda:  # first call of the fused path: includes compiling its kernels (Triton caches them on disk)
        latent = random_latent(*args.sizes[0], args.frames, device)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            consume(decode_video(ours_cl, latent, gen(), tiling=None))
        torch.cuda.synchronize()
        print(f"cold first decode (channels-last, {args.sizes[0][0]}x{args.sizes[0][1]}): "
              f"{time.perf_counter() - start:.2f} s")
    for case in cases(args.sizes):
        latent = random_latent(*case.size, args.frames, device)
        if cuda and not case.tiled:
            plan = resolve_plan(ours_cl, latent, "auto")
            print(f"{case.size[0]}x{case.size[1]}: auto plan from the free memory "
                  f"({torch.cuda.mem_get_info(device)[0] / GIB:.1f} GiB free): {plan}")
        reference = {}  # tiling -> uint8 frames on the CPU

        def ref_frames(tiled: bool) -> torch.Tensor:
            if tiled not in reference:
                tiling = TilingConfig.default() if tiled else None
                reference[tiled] = _frames(lambda: ref_decode_video(latent, ref, tiling, gen()))
            return reference[tiled]

        ref_tiling = TilingConfig.default() if case.tiled else None
        run_ref = lambda: consume(ref_decode_video(latent, ref, ref_tiling, gen()))  # noqa: E731
        # one pass reproduces the untiled reference; the tiling reproduces the tiled one; "auto" within the
        # budget is exact (one pass or streamed) unless it has to tile
        modes = [("one pass", dict(tiling=None), False)] if not case.tiled else [
            ("tiled", dict(tiling=Tiling.default()), True),
            (f"auto, {args.budget_gib:g} GiB", dict(tiling="auto", memory_budget=budget), False),
            ("streamed, 2 frames", dict(tiling=Streaming(2)), False)]
        with torch.inference_mode():
            t_ref, m_ref = measure(run_ref, args.warmup, args.reps)
            rows.append((case.name, "ltx-core", t_ref, m_ref, "", ""))
            for label, kw, tiled_ref in modes:
                layouts = ((ours_cl, "channels-last"), (ours, "plain"))
                for model, layout in layouts[:1] if label.startswith("streamed") else layouts:
                    run = lambda: consume(decode_video(model, latent, gen(), **kw))  # noqa: E731
                    t, m = measure(run, args.warmup, args.reps)
                    note, compare_tiled = "", tiled_ref
                    if kw["tiling"] == "auto":
                        plan = resolve_plan(model, latent, "auto", budget)
                        compare_tiled = plan == Tiling.default()  # compare with the reference result it reproduces
                        shape = tuple(latent.shape)
                        if isinstance(plan, Tiling):
                            est = estimate_tiled_bytes(model.cfg, shape, latent.dtype, plan, model.fused)
                        else:
                            chunk = plan.chunk_frames if isinstance(plan, Streaming) else None
                            est = estimate_decode_bytes(model.cfg, shape, latent.dtype, chunk, model.fused)
                        note = f"[plan {plan}; estimate {est / 2**20:.0f} MiB]"
                    frames = _frames(lambda: decode_video(model, latent, gen(), **kw))
                    check = agreement(frames, ref_frames(compare_tiled))
                    check += " vs tiled" if compare_tiled else " vs untiled"
                    rows.append((case.name, f"fastltx {label} ({layout})", t, m, check, note))
        del latent, reference
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    print(f"\n{'case':<26} {'implementation':<44} {'ms':>8} {'vs core':>8} {'peak MiB':>9}  agreement with ltx-core")
    base = {}
    for name, impl, t, m, check, note in rows:
        base.setdefault(name, t)  # the ltx-core row comes first
        print(f"{name:<26} {impl:<44} {t:>8.1f} {t / base[name]:>7.2f}x {m:>9.0f}  {check} {note}")
    print(f"(card: {card}; peak = max allocated above the weights; times are medians of {args.reps})")
    return rows


if __name__ == "__main__":
    main()
