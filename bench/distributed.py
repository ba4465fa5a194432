"""Transformer steps on several GPUs: sequence parallel (Ulysses) and guidance (CFG) parallel vs one GPU.

    torchrun --standalone --nproc_per_node 4 bench/distributed.py [--reps 3] [--sizes 768x1280,1024x1536]

Every rank builds the same random full-size LTX-2 19B transformer (bf16, fused projections, text K/V
cached per generation, eager). For each size (121 frames: 16 latent frames; 126 audio tokens, 1,024
text tokens) a distilled step (one forward, batch 1) runs on 1, 2, 4, ... GPUs (the first n ranks),
then a guided step (4 passes: positive, negative, STG, isolated modality) at the first size.
Median of ``--reps`` timed with CUDA events on rank 0, all in one session; the n-GPU outputs are
compared with the 1-GPU output (relative L2; bf16, so rounding-level differences are expected).
Results go to stdout and, as JSON, to ``--json``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import full_size_inputs, rel_l2, time_cuda  # noqa: E402
from fastltx.checkpoint.factory import random_transformer, transformer_config  # noqa: E402
from fastltx.pipelines.defaults import LTX2  # noqa: E402
from fastltx.runtime.distributed import init_distributed, world_from_ranks  # noqa: E402
from fastltx.sampling.denoisers import GuidedDenoiser  # noqa: E402
from fastltx.sampling.guidance import GuidanceSchedule  # noqa: E402
from fastltx.sampling.state import TokenState  # noqa: E402


def sub_worlds(world) -> dict:
    """{n: World of ranks 0..n-1} for n = 2, 4, ... up to the world size (None where this rank is outside)."""
    out = {}
    n = 2
    while n <= world.size:
        out[n] = world_from_ranks(list(range(n)), world.device)  # every rank takes part
        n *= 2
    return out


def measure(world, worlds, label: str, make_step, reps: int, rows: list, profile: str | None = None) -> None:
    """Time ``make_step(sub_world or None)()`` on 1 GPU and on each sub-world; rank 0 records rows
    (and, with ``profile``, writes the CUDA-time table of one 2-GPU step there)."""
    ref = None
    for n, sub in [(1, None), *worlds.items()]:
        if world.rank < n:
            step = make_step(sub)
            ms = time_cuda(step, warmup=1, reps=reps) if world.device.type == "cuda" else time_cpu(step, reps)
            out = [t.float() for t in step() if t is not None]
            if profile and n == 2:
                profiled(step, profile if world.rank == 0 else None)
            if world.rank == 0:
                ref = ref or out
                err = max(rel_l2(o, r) for o, r in zip(out, ref))
                peak = torch.cuda.max_memory_allocated() / 2**30 if world.device.type == "cuda" else 0.0
                rows.append(dict(step=label, gpus=n, ms=ms, speedup=rows_base(rows, label, ms), rel_l2=err,
                                 peak_gib=peak))
                print(f"{label:<34} {n} GPU  {ms:9.1f} ms  x{rows[-1]['speedup']:.2f}  rel L2 {err:.1e}  "
                      f"peak {peak:.1f} GiB", flush=True)
            del step, out
            if world.device.type == "cuda":
                torch.cuda.empty_cache()
        dist.barrier()


def profiled(step, path: str | None) -> None:
    if path is None or not torch.cuda.is_available():
        step()
        return
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    Path(path).write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30,
                                                    max_name_column_width=70))


def check_partial_attention(device) -> float:
    """The fused kernel's normaliser against float32 arithmetic (max relative error of the output)."""
    from fastltx.layers.sequence_parallel import partial_attention
    g = torch.Generator(device=device).manual_seed(2)
    q, k, v = (torch.randn(1, 32, t, 64, generator=g, device=device).to(torch.bfloat16) for t in (126, 3000, 3000))
    (o1, l1), (o2, l2) = partial_attention(q, k, v), partial_attention(q, k, v, fused=False)
    return max(((o1 - o2).abs().max() / o2.abs().max()).item(), ((l1 - l2).abs().max() / l2.abs().max()).item())


def time_cpu(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return sorted(times)[len(times) // 2]


def rows_base(rows: list, label: str, ms: float) -> float:
    base = next((r["ms"] for r in rows if r["step"] == label and r["gpus"] == 1), ms)
    return base / ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="768x1280,1024x1536")
    parser.add_argument("--no-guided", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--pipelined", action="store_true",
                        help="also time the distilled step at the last size with the Ulysses heads in 4 pipelined pieces")
    parser.add_argument("--profile", default=None, help="write the CUDA-time table of a 2-GPU step at the last size")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU (gloo): checks the script")
    args = parser.parse_args()
    start = time.perf_counter()
    world = init_distributed(device="cpu" if args.smoke else "cuda")
    worlds = sub_worlds(world)
    cfg = transformer_config("v1", "19b")
    if args.smoke:
        import dataclasses
        cfg = transformer_config("v1", "tiny", num_layers=2)
        cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, heads=4, head_dim=8, context_dim=32))
    model = random_transformer(cfg, seed=0, device=world.device, dtype=torch.bfloat16)
    model.fuse_projections()
    name = torch.cuda.get_device_name() if world.device.type == "cuda" else "cpu"
    if world.main:
        weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
        print(f"{name} x{world.size}, torch {torch.__version__}; weights {weights:.1f} GiB per GPU; setup "
              f"{time.perf_counter() - start:.0f} s; fused partial attention vs float32: "
              f"{check_partial_attention(world.device):.1e}", flush=True)
    rows: list = []
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    for i, (h, w) in enumerate(sizes):
        grid = (16, h // 32, w // 32)
        video, audio = full_size_inputs(cfg, 1, world.device, grid=grid)
        cache = model.cache_text(video, audio)
        label = f"distilled step {h}x{w} ({grid[0] * grid[1] * grid[2]} tok)"

        def simple(sub, video=video, audio=audio, cache=cache):
            extra = {} if sub is None else {"sequence": sub.sequence}
            return lambda: model(video, audio, None, cache, **extra)
        measure(world, worlds, label, simple, args.reps, rows, args.profile if i == len(sizes) - 1 else None)
        if i == 0 and not args.no_guided:
            gen = torch.Generator(device=world.device).manual_seed(1)
            negative = [torch.randn(m.context.shape, generator=gen, device=world.device).to(m.context.dtype)
                        for m in (video, audio)]
            states = [TokenState(m.latent, m.latent.clone(), torch.ones(*m.latent.shape[:2], 1, device=world.device),
                                 m.positions) for m in (video, audio)]
            sigma = video.sigma[0]

            def guided(sub, video=video, audio=audio, negative=negative, states=states, sigma=sigma):
                d = GuidedDenoiser(model, (video.context, negative[0]), (audio.context, negative[1]),
                                   GuidanceSchedule.constant(LTX2.video), GuidanceSchedule.constant(LTX2.audio),
                                   world=sub)
                return lambda: d(states[0], states[1], sigma, 0)
            measure(world, worlds, f"guided step {h}x{w} (4 passes)", guided, max(2, args.reps - 1), rows)
        del video, audio, cache
        torch.cuda.empty_cache()
    if args.pipelined:
        from fastltx.layers import sequence_parallel
        sequence_parallel.PIECES = 4
        h, w = sizes[-1]
        video, audio = full_size_inputs(cfg, 1, world.device, grid=(16, h // 32, w // 32))
        cache = model.cache_text(video, audio)
        measure(world, worlds, f"distilled {h}x{w}, 4 pieces", lambda sub: (
            lambda: model(video, audio, None, cache, **({} if sub is None else {"sequence": sub.sequence}))),
            args.reps, rows)
    if world.main:
        print(f"total {time.perf_counter() - start:.0f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(dict(device=name, world=world.size,
                                                       torch=torch.__version__, rows=rows), indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
