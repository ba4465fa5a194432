"""Transformer steps on several GPUs: sequence parallel (Ulysses) and guidance (CFG) parallel vs one GPU.

    torchrun --standalone --nproc_per_node 4 bench/distributed.py [--reps 3] [--sizes 768x1280,1024x1536]
        [--compile [--mode MODE]] [--graphs] [--profile-dir DIR [--profile-gpus N]] [--no-guided] [--json PATH]
        [--graph-capture-mode MODE] [--hang-s S [--hang-dir DIR]] [--counts 1,4] [--no-audio] [--trace-dir DIR]
    torchrun --standalone --nproc_per_node 2 bench/distributed.py --smoke [--compile]   # CPU, gloo, tiny model

Every rank builds the same random full-size LTX-2 19B transformer (bf16, fused projections, text K/V
cached per generation; eager, or with ``--compile`` the blocks compiled as the pipelines do). For
each size (multiples of 32; 121 frames: 16 latent frames; 126 audio tokens, 1,024 text tokens) a
distilled step (one forward, batch 1) runs on 1, 2, 4, ... GPUs (the first n ranks, all of them in
the sequence group whatever the token count), then a guided step (4 passes: positive, negative, STG,
isolated modality) at the first size. The first call of each (step, GPUs) is timed on its own (with
``--compile`` it compiles, and is printed as "first"), then one more warm-up call when compiled, then
the median of ``--reps`` timed with CUDA events on rank 0, all in one session; the n-GPU outputs are
compared with the 1-GPU output (relative L2; bf16, so rounding-level differences are expected).
``--graphs``: each distilled step then runs again with the blocks through CUDA graphs
(``model.graph_blocks()``: recorded on the second call, replayed after), timed and compared with
the plain step at the same GPU count (time ratio; bit-identical or not). With several GPUs the
collectives run eagerly between graph pieces (with NCCL inside the graphs, full-size steps stalled:
docs/benchmarks.md, sixth session); ``--hang-s`` dumps every thread's stack and exits after that many
seconds.
``--profile-dir``: at every size rank 0 writes the CUDA-time table of one 1-GPU and one N-GPU
distilled step (``--profile-gpus``, default the most GPUs) to DIR/prof_{h}x{w}_{n}gpu.txt and sums
the kernels' self CUDA time into NCCL, GEMM, attention and the rest (printed, and in the JSON row).
``--trace-dir``: every rank traces two calls of every measured step (bench/timeline.py: busy time,
NCCL, idle gaps by cause), writes the Chrome trace to DIR/trace_{label}_{n}gpu_rank{r}.json and
prints its summary line. ``--counts``: the GPU counts measured (default 1, 2, 4, ... up to the
world size). ``--no-audio``: the video stream alone (what the replicated audio stream costs).
Results go to stdout and, as JSON, to ``--json``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.autograd import DeviceType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import full_size_inputs, rel_l2, time_cuda  # noqa: E402
from bench.timeline import KINDS, kernel_kind, nccl_settings, summary_line, traced  # noqa: E402
from fastltx.checkpoint.factory import random_transformer, transformer_config  # noqa: E402
from fastltx.pipelines.defaults import LTX2  # noqa: E402
from fastltx.runtime.distributed import init_distributed, world_from_ranks  # noqa: E402
from fastltx.sampling.denoisers import GuidedDenoiser  # noqa: E402
from fastltx.sampling.guidance import GuidanceSchedule  # noqa: E402
from fastltx.sampling.state import TokenState  # noqa: E402


def sub_worlds(world, counts: list[int] | None = None) -> dict:
    """{n: World of ranks 0..n-1} for n in ``counts`` above 1 (default 2, 4, ... up to the world
    size; None where this rank is outside)."""
    if counts is None:
        counts = [2 ** i for i in range(1, world.size.bit_length()) if 2 ** i <= world.size]
    return {n: world_from_ranks(list(range(n)), world.device) for n in counts if n > 1}  # every rank takes part


def measure(world, worlds, label: str, make_step, reps: int, rows: list, compiled: bool = False,
            profile: dict | None = None, plain: dict | None = None, trace_dir: str | None = None) -> dict:
    """Time ``make_step(sub_world or None)()`` on 1 GPU and on each sub-world; rank 0 records rows
    and returns {n: (ms, outputs)}. ``profile``: {n: path} of the GPU counts whose step to profile
    (rank 0 writes the table there). ``plain``: such a result of the same step without CUDA graphs,
    to compare with (time ratio, and whether the outputs are bit-identical). ``trace_dir``: every
    rank traces two more calls there (bench/timeline.py) and prints the summary."""
    ref = None
    kept = {}
    cuda = world.device.type == "cuda"
    for n, sub in [(1, None), *worlds.items()]:
        if world.rank < n:
            step = make_step(sub)
            first_s = first_call(step, cuda)  # compiles, when compiled
            warmup = 1 if compiled or plain is not None else 0  # the second call may still recompile, or record
            ms = time_cuda(step, warmup=warmup, reps=reps) if cuda else time_cpu(step, reps, warmup)
            out = [t.float() for t in step() if t is not None]
            kernels = None
            if profile and n in profile:
                kernels = profiled(step, profile[n] if world.rank == 0 else None)
            timeline = None
            if trace_dir and cuda:
                name = label.split(" (")[0].replace(" ", "_")
                timeline = traced(step, str(Path(trace_dir) / f"trace_{name}_{n}gpu_rank{world.rank}.json"))
                print(f"    {label}, {n} GPU, rank {world.rank} timeline: {summary_line(timeline)}", flush=True)
            if world.rank == 0:
                ref = ref or out
                err = max(rel_l2(o, r) for o, r in zip(out, ref))
                peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
                rows.append(dict(step=label, gpus=n, ms=ms, speedup=rows_base(rows, label, ms), rel_l2=err,
                                 peak_gib=peak, compiled=compiled, first_s=first_s))
                versus = ""
                if plain is not None and n in plain:
                    base_ms, base_out = plain[n]
                    same = all(torch.equal(o, b) for o, b in zip(out, base_out))
                    diff = max(rel_l2(o, b) for o, b in zip(out, base_out))
                    rows[-1].update(vs_plain=ms / base_ms, identical_to_plain=same, rel_l2_to_plain=diff)
                    versus = f"  {ms / base_ms:.3f}x plain, " + ("identical" if same else f"rel L2 {diff:.1e} to plain")
                kept[n] = (ms, out)
                print(f"{label:<34} {n} GPU  {ms:9.1f} ms  x{rows[-1]['speedup']:.2f}  rel L2 {err:.1e}  "
                      f"peak {peak:.1f} GiB" + (f"  first {first_s:.1f} s" if compiled else "") + versus, flush=True)
                if timeline is not None:
                    rows[-1]["timeline_ms"] = timeline
                if kernels is not None:
                    rows[-1]["kernels_ms"] = kernels
                    kinds = "  ".join(f"{k} {v:.1f}" for k, v in kernels.items())
                    print(f"    {n} GPU kernels, self CUDA ms: {kinds}  (step {ms:.1f} ms)", flush=True)
            del step, out
            if cuda:
                torch.cuda.empty_cache()
        dist.barrier()
    return kept


def first_call(step, cuda: bool) -> float:
    """Seconds of the first call (with --compile: Dynamo and Inductor compiling the block)."""
    start = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def profiled(step, path: str | None) -> dict | None:
    """One call of ``step``; on rank 0 (``path`` given) under the profiler: writes its kernel table
    there, and the host's (ops by self CPU time) beside it (``*_host.txt``), and returns
    ``kernel_summary`` of it. Without CUDA, just the call."""
    if path is None or not torch.cuda.is_available():
        step()
        return None
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(events.table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90))
    Path(path).with_name(Path(path).stem + "_host.txt").write_text(
        events.table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=90))
    return kernel_summary(events)


def kernel_summary(events) -> dict:
    """Milliseconds of self device time of the profiled kernels by kind (``KINDS``, then "other"), and
    their "total". Host-side events and annotations (ranges spanning kernels) are left out."""
    out = dict.fromkeys([*KINDS, "other"], 0.0)
    for e in events:
        if getattr(e, "device_type", None) == DeviceType.CPU or getattr(e, "is_user_annotation", False):
            continue
        us = getattr(e, "self_device_time_total", None)
        us = e.self_cuda_time_total if us is None else us
        out[kernel_kind(e.key)] += us / 1000
    out["total"] = sum(out.values())
    return out


def check_partial_attention(device) -> float:
    """The fused kernel's normaliser against float32 arithmetic (max relative error of the output)."""
    from fastltx.layers.sequence_parallel import partial_attention
    g = torch.Generator(device=device).manual_seed(2)
    q, k, v = (torch.randn(1, 32, t, 64, generator=g, device=device).to(torch.bfloat16) for t in (126, 3000, 3000))
    (o1, l1), (o2, l2) = partial_attention(q, k, v), partial_attention(q, k, v, fused=False)
    return max(((o1 - o2).abs().max() / o2.abs().max()).item(), ((l1 - l2).abs().max() / l2.abs().max()).item())


def time_cpu(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="768x1280,1024x1536", help="HxW,... (multiples of 32)")
    parser.add_argument("--no-guided", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile of the blocks (compile_blocks)")
    parser.add_argument("--graphs", action="store_true",
                        help="also time each distilled step with the blocks through CUDA graphs (model.graph_blocks(); "
                             "the collectives between graph pieces), against the plain step")
    parser.add_argument("--mode", default=None, help="with --compile: torch.compile's mode (e.g. reduce-overhead: CUDA graphs)")
    parser.add_argument("--profile-dir", default=None,
                        help="write the CUDA-time tables of a 1-GPU and an N-GPU distilled step at each size here")
    parser.add_argument("--profile-gpus", type=int, default=None, help="N of --profile-dir (default: the most GPUs)")
    parser.add_argument("--graph-capture-mode", default="global", choices=("global", "thread_local", "relaxed"),
                        help="with --graphs: torch.cuda.graph's capture_error_mode")
    parser.add_argument("--hang-s", type=float, default=None,
                        help="after this many seconds, write every thread's Python stack and exit (to locate a hang): "
                             "to stderr, or with --hang-dir to DIR/stack_rank{r}.txt, one file a rank")
    parser.add_argument("--hang-dir", default=None)
    parser.add_argument("--overlap", action="store_true",
                        help="with --compile: Inductor's reordering of compute around the collectives "
                             "(reorder_for_compute_comm_overlap), to overlap them")
    parser.add_argument("--counts", default=None, help="GPU counts to measure, e.g. 1,4 (default 1, 2, 4, ...)")
    parser.add_argument("--no-audio", action="store_true", help="the video stream alone (no audio tokens)")
    parser.add_argument("--trace-dir", default=None, help="trace every measured step on every rank (bench/timeline.py)")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU (gloo): checks the script")
    args = parser.parse_args(argv)
    if args.mode and not args.compile:
        parser.error("--mode needs --compile")
    if args.overlap and not args.compile:
        parser.error("--overlap needs --compile")
    if args.counts is not None:
        try:
            args.counts = sorted({int(c) for c in args.counts.split(",")})
        except ValueError:
            parser.error(f"--counts: GPU counts like 1,4 expected, got {args.counts!r}")
        if args.counts[0] < 1:
            parser.error(f"--counts: positive GPU counts expected, got {args.counts}")
    try:
        args.sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: HxW,... expected, got {args.sizes!r}")
    if any(len(s) != 2 or s[0] % 32 or s[1] % 32 or min(s) <= 0 for s in args.sizes):
        parser.error(f"--sizes: positive multiples of 32 expected, got {args.sizes}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    world = init_distributed(device="cpu" if args.smoke else "cuda")
    if args.hang_s:
        import faulthandler
        stacks = sys.stderr
        if args.hang_dir:
            Path(args.hang_dir).mkdir(parents=True, exist_ok=True)
            stacks = open(Path(args.hang_dir) / f"stack_rank{world.rank}.txt", "w")  # noqa: SIM115 (open until exit)
        faulthandler.dump_traceback_later(args.hang_s, exit=True, file=stacks)
    if args.counts is not None and args.counts[-1] > world.size:
        raise SystemExit(f"--counts {args.counts}: more GPUs than the {world.size} processes started")
    worlds = sub_worlds(world, args.counts)
    counts = [1, *worlds]
    profile_gpus = args.profile_gpus or counts[-1]
    if args.profile_dir and profile_gpus not in counts:
        raise SystemExit(f"--profile-gpus {profile_gpus}: not one of the measured GPU counts {counts}")
    cfg = transformer_config("v1", "19b")
    if args.smoke:
        import dataclasses
        cfg = transformer_config("v1", "tiny", num_layers=2)
        cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, heads=4, head_dim=8, context_dim=32))
    model = random_transformer(cfg, seed=0, device=world.device, dtype=torch.bfloat16)
    model.fuse_projections()
    if args.compile:
        from fastltx.runtime.compile import compile_blocks
        if args.overlap:
            import torch._inductor.config as inductor_config
            inductor_config.reorder_for_compute_comm_overlap = True
        compile_blocks(model, mode=args.mode)
    name = torch.cuda.get_device_name() if world.device.type == "cuda" else "cpu"
    if world.main:
        weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
        print(f"{name} x{world.size}, torch {torch.__version__}, {nccl_settings()}; weights {weights:.1f} GiB per GPU; "
              f"{'compiled' if args.compile else 'eager'}; setup {time.perf_counter() - start:.0f} s; "
              f"fused partial attention vs float32: {check_partial_attention(world.device):.1e}", flush=True)
    rows: list = []
    for i, (h, w) in enumerate(args.sizes):
        grid = (16, h // 32, w // 32)
        video, audio = full_size_inputs(cfg, 1, world.device, grid=grid)
        if args.no_audio:
            audio = None
        cache = model.cache_text(video, audio)
        label = f"distilled step {h}x{w} ({grid[0] * grid[1] * grid[2]} tok)"

        def simple(sub, video=video, audio=audio, cache=cache):
            extra = {} if sub is None else {"sequence": sub.sequence}
            return lambda: model(video, audio, None, cache, **extra)
        profile = {n: str(Path(args.profile_dir) / f"prof_{h}x{w}_{n}gpu.txt")
                   for n in {1, profile_gpus}} if args.profile_dir else None
        plain = measure(world, worlds, label, simple, args.reps, rows, args.compile, profile, trace_dir=args.trace_dir)
        if args.graphs:  # the same steps through CUDA graphs (compiled code reused), against the plain ones
            from fastltx.models.transformer import model as transformer_module
            transformer_module.GRAPH_MAX_TOKENS = 1 << 30  # every size graphed here (the model: small passes only)
            model.graph_blocks(capture_error_mode=args.graph_capture_mode)
            measure(world, worlds, label.replace("step", "step graphed"), simple, args.reps, rows, args.compile, plain=plain,
                    trace_dir=args.trace_dir)
            model.graph_blocks(False)
            del plain
        if i == 0 and not args.no_guided and audio is not None:  # the guided step runs both streams
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
            measure(world, worlds, f"guided step {h}x{w} (4 passes)", guided, max(2, args.reps - 1), rows, args.compile)
        del video, audio, cache
        torch.cuda.empty_cache()
    if world.main:
        print(f"total {time.perf_counter() - start:.0f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(dict(device=name, world=world.size, torch=torch.__version__,
                                                       compiled=args.compile, smoke=args.smoke, rows=rows), indent=1))
    dist.barrier()  # every rank done before any tears down (gloo aborted a rank that left early)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
