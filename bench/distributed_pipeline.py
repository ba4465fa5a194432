"""The whole distilled pipeline end to end on all N GPUs of a torchrun world vs one GPU, in one session.

    torchrun --standalone --nproc_per_node 2 bench/distributed_pipeline.py [--sizes 768x1280,1024x1536]
        [--reps 3] [--compile] [--graphs] [--exchanges heads,keys] [--json PATH] [--deadline-s 420]
    torchrun --standalone --nproc_per_node 4 bench/distributed_pipeline.py --gpus 2,4   # 1, 2 and 4 GPUs
    torchrun --standalone --nproc_per_node 2 bench/distributed_pipeline.py --smoke   # CPU, gloo, tiny models

Every rank builds every model once, in memory on its own GPU, with the same seeded random bf16
weights at the released sizes (bench/models.py: the 19B transformer, Gemma 3 12B with the LTX-2
text projection and connectors, the video VAE encoder and decoder, the audio decoder and vocoder,
the x2 latent upsampler; ~62.5 GiB). Two ``DistilledPipeline`` objects share these models:

* 1 GPU: over a ``Components`` without a world, called by rank 0 alone (the others wait at a barrier);
* N GPUs: over a ``Components`` holding the torchrun ``World``, the object ``load_pipeline(...,
  world=...)`` and ``fastltx generate --gpus N`` build: every rank calls it, each transformer step
  splits the video tokens over the ranks (sequence parallel), the decoder's tiles are split, rank 0 gets the
  result. ``--gpus 2,4``: each of these counts in turn, over the first N ranks of the world (a
  ``World`` of those ranks, as ``world_from_ranks`` makes it; the other ranks wait), so one launch
  on 4 GPUs measures 1, 2 and 4.

For each size (121 frames: text, 8 steps at half size, x2 upsampling, 3 steps at full size, decode),
1 GPU then N GPUs: one warm-up call (printed as "cold"; with ``--compile`` it compiles the block for
both token counts), then ``--reps`` timed calls, wall clock on rank 0 from a barrier that releases
all ranks together to the result on rank 0; per-stage times from the pipeline's ``.timings`` (each
stage synchronises the device), "other" the rest (the frames' copy to the host). Medians are
reported, the speed-up over 1 GPU (of the call; of stages 1 and 2, "steps x"; and of the 11
transformer steps themselves, "tsteps" ms and its "x": ``StepClock``, CUDA events around each
denoiser call, without what lies between the steps), and the N-GPU frames against the 1-GPU frames
(uint8 max / mean difference, audio max): bf16, so small differences are expected. Each row's line
also gives stage 1's first step against its later ones, and with several GPUs every rank's text
and stage-1 times (where the first step's waiting shows; docs/benchmarks-multi-gpu-2.md).

``--compile``: fused q/k/v projections and torch.compile of the blocks (as bench/pipeline.py's
compiled variant), shared by both runs; the N-GPU graphs, with the collectives inside,
compile in their own cold call. ``--graphs``: each (size, GPUs) run again with the blocks through
CUDA graphs (``LTXTransformer.graph_blocks``, as ``Components(cuda_graphs=True)`` sets; recorded
in the warm-up call, which then also captures; passes over ``GRAPH_MAX_TOKENS`` run plain, as in
the pipelines), its steps' time against the plain run's ("steps_vs_plain"; its speed-up over the
1-GPU graphed run; ``--graphs-only``: no plain runs, the graphed warm-up call compiles). With
several GPUs the collectives run eagerly between graph pieces (they are custom ops, plain runs
included); ``--funcol-plain`` runs each (size, GPUs) once more without graphs
and with PyTorch's functional collectives traced into the compiled graphs instead (rows "Nf").
``--exchanges heads,keys``: each N-GPU variant once with each self-attention exchange (the
transformer's ``sequence_exchange``: "heads", Ulysses all-to-alls, rows "Nh"; "keys", keys and
values all-gathered, rows "Nk"; "push", the same pushed into the peers' memory while the queries
are projected, rows "Np"; default "auto", what the model picks: "push" on 2 GPUs with peer
access ("keys" on 2 others), "heads" on more; an exchange that another one listed already means
at that count runs once).
``--riders on,off``: each N-GPU variant with and without the video->audio partials riding in the
next block's exchange (the transformer's ``sequence_riders``; default "auto", the model's own
choice: on small shards only; rows with riders always on end in "r", never in "n").
``--gc-freeze``: each run's timed calls after ``gc.collect(); gc.freeze()`` (eighteenth session: a
2-GPU call 3205 -> 3108 ms). ``--clocks``: rank 0 samples the GPUs' SM clocks (nvidia-smi, every
100 ms); each row gives, for stages 1 and 2, every GPU's median clock and how often its power cap
held it down (``bench/gpu_clocks.py``; twenty-third session: the 4-GPU stage 2 ran capped, each GPU
at its own clock). ``--deadline-s``: no new (size, GPUs) run starts after that many seconds;
``--hang-s``: after that many, every rank prints its threads' stacks and exits.
``--smoke``: tiny models in float32 on the CPU over gloo (the N-process frames then agree with the
one-process frames within one level). Only rank 0 prints and writes ``--json``.
"""

import argparse
import contextlib
import faulthandler
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.gpu_clocks import ClockLog, describe  # noqa: E402
from bench.models import build_ours  # noqa: E402
from bench.pipeline import STAGES, compare, peak_above, reset_peak, summarize, sync  # noqa: E402
from bench.text_encoder import POSITIVE, unique_bytes  # noqa: E402
from bench.timeline import nccl_settings  # noqa: E402
from fastltx.layers.sequence_parallel import EXCHANGES  # noqa: E402
from fastltx.models.transformer.sharding import exchange_for  # noqa: E402
from fastltx.pipelines import Components, DistilledPipeline, ModelFiles  # noqa: E402
from fastltx.runtime.distributed import World, functional_collectives, init_distributed, world_from_ranks  # noqa: E402
from fastltx.sampling.denoisers import SimpleDenoiser  # noqa: E402
from fastltx.sampling.schedules import DISTILLED_SIGMAS  # noqa: E402

STAGE1_STEPS = len(DISTILLED_SIGMAS) - 1  # the distilled pipeline's stage-1 steps; stage 2's follow

GIB = 2**30


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=None, help="HxW,... (default 768x1280,1024x1536; --smoke: 64x128)")
    p.add_argument("--frames", type=int, default=None, help="default 121 (--smoke: 9)")
    p.add_argument("--reps", type=int, default=None, help="timed calls per run after the warm-up (default 3; --smoke: 1)")
    p.add_argument("--compile", action="store_true", help="fused projections + torch.compile of the blocks")
    p.add_argument("--gpus", default=None, help="GPU counts to measure besides 1, each over the first N ranks "
                   "(default: the world size)")
    p.add_argument("--memory", default="full",
                   help="the Components' memory setting (default full: every model resident, nothing moved; "
                        "two Components share the models, so a setting that moves them is not meaningful here)")
    p.add_argument("--min-tokens-per-rank", type=int, default=None,
                   help="split a pass over fewer ranks below this many video tokens a rank "
                        "(compiled and eager; default: fastltx.models.transformer.sharding's MIN_TOKENS_PER_RANK, "
                        "MIN_TOKENS_PER_RANK_EAGER)")
    p.add_argument("--min-tokens-to-split", type=int, default=None,
                   help="run a pass of fewer video tokens whole on every rank (default: sharding's MIN_TOKENS_TO_SPLIT)")
    p.add_argument("--graphs", action="store_true",
                   help="also run each (size, GPUs) with the transformer blocks through CUDA graphs "
                        "(graph_blocks, recorded in the warm-up call); table rows 'Ng'")
    p.add_argument("--graphs-only", action="store_true", help="--graphs without the plain runs (their cold call compiles)")
    p.add_argument("--funcol-plain", action="store_true",
                   help="also run each (size, GPUs) without graphs and with PyTorch's functional collectives "
                        "(functional_collectives) instead of the custom ops, against the plain run; table rows 'Nf'")
    p.add_argument("--exchanges", default="auto",
                   help="self-attention exchanges to run each N-GPU variant with (auto, heads, keys, push; "
                        "e.g. heads,keys); table rows 'Nh', 'Nk', 'Np'")
    p.add_argument("--riders", default="auto",
                   help="auto, on, off or a list (on,off): each N-GPU variant with the video->audio partials riding "
                        "in the next block's exchange (sequence_riders) as the model picks (auto: small shards "
                        "only), always, never; rows end in 'r' with on, 'n' with off")
    p.add_argument("--gc-freeze", action="store_true",
                   help="after each run's cold call, gc.collect() and gc.freeze() on every rank (a long-running "
                        "process's conditions: full collections no longer walk the models and compiled code)")
    p.add_argument("--clocks", action="store_true",
                   help="sample the GPUs' SM clocks (nvidia-smi) and report each stage's median clock per GPU")
    p.add_argument("--deadline-s", type=float, default=420.0, help="start no new run after this many seconds")
    p.add_argument("--hang-s", type=float, default=None,
                   help="after this many seconds, every rank prints its threads' stacks and exits (a hang's where)")
    p.add_argument("--json", default=None, help="write the results there (rank 0)")
    p.add_argument("--smoke", action="store_true", help="tiny float32 models on the CPU over gloo: checks the script")
    args = p.parse_args(argv)
    if args.clocks and shutil.which("nvidia-smi") is None:  # every rank stops here, before any model is built
        p.error("--clocks needs nvidia-smi on the PATH (an NVIDIA driver)")
    args.sizes = args.sizes or ("64x128" if args.smoke else "768x1280,1024x1536")
    args.frames = args.frames or (9 if args.smoke else 121)
    args.reps = args.reps or (1 if args.smoke else 3)
    args.exchanges = args.exchanges.split(",")
    args.graphs = args.graphs or args.graphs_only
    riders = args.riders.split(",")
    if any(r not in ("on", "off", "auto") for r in riders):
        p.error(f"--riders: auto, on, off or a list such as on,off, got {args.riders}")
    args.riders = [{"on": True, "off": False, "auto": "auto"}[r] for r in riders]
    if any(e not in EXCHANGES for e in args.exchanges):
        p.error(f"--exchanges: each one of {', '.join(EXCHANGES)} expected, got {args.exchanges}")
    return args


class StepClock:
    """The time of every denoiser call (one transformer step) of the pipeline calls made while ``on``:
    CUDA events around each call on a GPU (no waiting), the host clock on the CPU. A step's time
    runs from the GPU reaching its first kernel (or the host starting it, if the GPU was idle) to its
    last kernel's end; the stages' times also hold what lies between the steps (state set-up, Euler
    updates, the host getting ahead again at a stage's start). ``host``: the host's seconds in each
    call of the last ``take``: launching its work and any wait inside the call (on 4 x H200 it came
    to 88-95% of the GPU time even for one-graph steps on 1 GPU, so it does not tell a host-bound
    step apart by itself)."""

    def __init__(self, denoiser_class, cuda: bool):
        self.marks, self.on, self.cuda, self.host = [], False, cuda, []
        call, clock = denoiser_class.__call__, self

        def timed(denoiser, *args, **kwargs):
            if not clock.on:
                return call(denoiser, *args, **kwargs)
            began = time.perf_counter()
            start = torch.cuda.Event(enable_timing=True) if cuda else began
            if cuda:
                start.record()
            out = call(denoiser, *args, **kwargs)
            if cuda:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
            else:
                end = time.perf_counter()
            clock.marks.append((start, end, time.perf_counter() - began))
            return out
        denoiser_class.__call__ = timed

    def take(self) -> list[float]:
        """Seconds of each step since the last ``take``."""
        if self.cuda:
            torch.cuda.synchronize()
            times = [a.elapsed_time(b) / 1e3 for a, b, _ in self.marks]
        else:
            times = [b - a for a, b, _ in self.marks]
        self.host = [h for _, _, h in self.marks]
        self.marks = []
        return times


def timed_call(pipe: DistilledPipeline, device: torch.device, kwargs: dict, together: World | None,
               clock: StepClock | None = None):
    """(total s, stages, frames, waveform, peak GiB above the start, step seconds) on rank 0, None
    on the others. ``together``: the world whose ranks meet at a barrier first, so the clock starts
    when all start. ``clock``: times the transformer steps (else no step times)."""
    if together is not None:
        dist.barrier(group=together.group)
    base = reset_peak(device)
    sync(device)
    if clock is not None:
        clock.take()
        clock.on = True
    began = time.time()  # wall clock, for ``ClockLog`` windows
    start = time.perf_counter()
    try:
        result = pipe(**kwargs)
    finally:
        if clock is not None:
            clock.on = False
    total = time.perf_counter() - start
    step_times = clock.take() if clock is not None else []
    if result is None:
        return None
    stages = dict(pipe.timings)
    stages["other"] = total - sum(stages.values())
    return (total, stages, result.video, result.audio, peak_above(device, base), step_times,
            clock.host if clock else [], began)


def measure(pipe: DistilledPipeline, device, kwargs: dict, reps: int, together: World | None,
            clock: StepClock | None = None, freeze_gc: bool = False, clocks: ClockLog | None = None) -> dict | None:
    """One warm-up (cold) call, then ``reps`` timed calls: ``bench.pipeline.summarize`` + cold_s
    and, with ``clock``, ``step_s``: the median seconds in the transformer steps of stage 1 and of
    stage 2 (their first ``STAGE1_STEPS`` and the rest) and ``host_step_s``: the same for the host's
    time in those calls (rank 0); ``first_step_s``: the median first step of stage 1 and the median
    of its later ones (the first makes the text cache, and waits for every rank to arrive).
    ``rank_stages``, over several ranks: each rank's median text and stage-1 seconds (a rank that
    ends its text stage early waits for the others at stage 1's first collective). ``freeze_gc``:
    after the cold call, ``gc.collect(); gc.freeze()`` (the objects made so far, compiled code and
    graphs included, out of the cyclic collector's reach, as a long-running server would do).
    ``steps_ms``: the last call's step times. With a ``ClockLog`` (rank 0), ``clocks``: for stages 1
    and 2 and each GPU of the run, the median over the calls of the SM clock's median and the mean
    share of samples at the power cap (``bench.gpu_clocks``)."""
    cold = timed_call(pipe, device, kwargs, together, clock)
    if freeze_gc:
        gc.collect()
        gc.freeze()
    runs, ranks = [], []
    for _ in range(reps):
        runs.append(timed_call(pipe, device, kwargs, together, clock))
        ranks.append(rank_stages(pipe, together))
    if cold is None:
        return None
    out = summarize(runs)
    out["cold_s"] = cold[0]
    if together is not None:
        out["rank_stages"] = [{k: statistics.median(call[r][k] for call in ranks) for k in RANK_STAGES}
                              for r in range(together.size)]
    if clock is not None:
        for key, i in (("step_s", 5), ("host_step_s", 6)):
            out[key] = {"stage 1": statistics.median(sum(r[i][:STAGE1_STEPS]) for r in runs),
                        "stage 2": statistics.median(sum(r[i][STAGE1_STEPS:]) for r in runs),
                        "steps": len(runs[-1][i])}
        out["first_step_s"] = {"first": statistics.median(r[5][0] for r in runs),
                               "later": statistics.median(statistics.median(r[5][1:STAGE1_STEPS]) for r in runs)}
        out["steps_ms"] = [round(t * 1e3, 1) for t in runs[-1][5]]
    if clocks is not None:
        out["clocks"] = stage_clocks(runs, clocks, 1 if together is None else together.size)
    return out


def stage_clocks(runs: list, clocks: ClockLog, gpus: int) -> dict:
    """``measure``'s ``clocks``: each call's stages lie one after the other from its start (each stage
    synchronises the device at its end)."""
    per_run = []
    for r in runs:
        t, windows = r[7], {}
        for name, seconds in r[1].items():
            if name in ("stage 1", "stage 2"):
                windows[name] = clocks.window(t, t + seconds, gpus)
            t += seconds
        per_run.append(windows)
    out = {}
    for stage in ("stage 1", "stage 2"):
        gpus_seen = sorted({g for w in per_run for g in w.get(stage, {})})
        out[stage] = {g: dict(mhz=statistics.median(w[stage][g]["mhz"] for w in per_run if g in w.get(stage, {})),
                              capped=statistics.mean(w[stage][g]["capped"] for w in per_run if g in w.get(stage, {})))
                      for g in gpus_seen}
    return out


RANK_STAGES = ("text", "stage 1")


def rank_stages(pipe: DistilledPipeline, together: World | None) -> list[dict] | None:
    """The text and stage-1 seconds of the last call on every rank of ``together`` (None: one process)."""
    if together is None:
        return None
    mine = {k: pipe.timings.get(k, 0.0) for k in RANK_STAGES}
    every = [None] * together.size
    dist.all_gather_object(every, mine, group=together.group)
    return every


def single_run(pipe: DistilledPipeline, device, kwargs: dict, reps: int, clock: StepClock | None = None,
               freeze_gc: bool = False, clocks: ClockLog | None = None) -> dict:
    """``measure`` on rank 0 alone; a failure (running out of memory with the whole sequence on one
    GPU, say) is reported and the N-GPU run of the size still goes ahead."""
    try:
        return measure(pipe, device, kwargs, reps, together=None, clock=clock, freeze_gc=freeze_gc, clocks=clocks)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return dict(error=traceback.format_exc(limit=3)[-800:])


def record(row: dict, r: dict, base: dict | None) -> None:
    """Fill ``row`` from a ``measure`` result (or an error) and the 1-GPU result ``base`` (None: none)."""
    row.update({k: v for k, v in r.items() if k not in ("frames", "audio")})
    if "error" in r:
        return
    row["speedup"] = base["total"] / r["total"] if base else (1.0 if row["gpus"] == 1 else None)
    row["steps_speedup"] = steps(base) / steps(r) if base else (1.0 if row["gpus"] == 1 else None)
    if "step_s" in r:
        row["step_speedup"] = (gpu_steps(base) / gpu_steps(r) if base and "step_s" in base
                               else (1.0 if row["gpus"] == 1 else None))
    if base is not None:
        row["vs_1_gpu"] = compare(r, base)


def steps(r: dict) -> float:
    """Seconds in the transformer steps of a call (stages 1 and 2)."""
    return r["stages"].get("stage 1", 0.0) + r["stages"].get("stage 2", 0.0)


def gpu_steps(r: dict) -> float:
    """Seconds in the transformer steps themselves (``StepClock``), stages 1 and 2."""
    return r["step_s"]["stage 1"] + r["step_s"]["stage 2"]


def line(row: dict) -> str:
    head = (f"{row['size']} {row['gpus']} GPU(s){' graphed' if row.get('graphs') else ''}"
            f"{' funcol' if row.get('funcol') else ''}{' ' + row['exchange'] if row.get('exchange') else ''}"
            f"{ {True: ' riders', False: ' no riders'}.get(row.get('riders'), '')}: ")
    if "error" in row:
        return head + "FAILED " + row["error"].strip().splitlines()[-1]
    st = " ".join(f"{k} {v * 1e3:.0f}" for k, v in row["stages"].items())
    x = "-" if row["speedup"] is None else f"{row['speedup']:.2f}"
    if row.get("steps_speedup") is not None:
        x += f", steps x{row['steps_speedup']:.2f}"
    if row.get("step_s"):
        st_ = row["step_s"]
        x += (f", {st_['steps']} transformer steps {st_['stage 1'] * 1e3:.0f} + {st_['stage 2'] * 1e3:.0f} ms"
              + ("" if row.get("step_speedup") is None else f" x{row['step_speedup']:.2f}"))
        if row.get("host_step_s"):
            h = row["host_step_s"]
            x += f", host {h['stage 1'] * 1e3:.0f} + {h['stage 2'] * 1e3:.0f} ms"
        if row.get("first_step_s"):
            f = row["first_step_s"]
            x += f", stage-1 step 1 {f['first'] * 1e3:.1f} ms, later ones {f['later'] * 1e3:.1f}"
    if row.get("clocks"):
        x += "; " + describe(row["clocks"])
    if row.get("rank_stages"):
        x += "; text / stage 1 by rank " + ", ".join(f"{r['text'] * 1e3:.0f} / {r['stage 1'] * 1e3:.0f}"
                                                   for r in row["rank_stages"])
    s = (head + f"{row['total'] * 1e3:.0f} ms (x{x}; cold {row['cold_s']:.1f} s; runs "
         f"{', '.join(f'{t * 1e3:.0f}' for t in row['totals'])}; {st}"
         + ("" if row["peak_gib"] != row["peak_gib"] else f"; peak +{row['peak_gib']:.2f} GiB on rank 0") + ")")
    c = row.get("vs_1_gpu")
    if row.get("steps_vs_plain") is not None:
        s += f"; steps {row['steps_vs_plain']:.3f}x plain"
    if c is not None:
        s += "; vs 1 GPU: " + (c["error"] if "error" in c else f"frames max {c['frames_max']:.0f} mean "
                               f"{c['frames_mean']:.3f}, audio max {c['audio_max']:.2e}")
    return s


def gpu_column(row: dict) -> str:
    """The table's GPU column: the count, "g" added for CUDA graphs, "f" for PyTorch's functional
    collectives, "h" / "k" / "p" for a named exchange, "r" / "n" for riders always / never (none: the
    model's "auto"; before the fifteenth session's docs, untagged rows had riders off)."""
    exchange = {"heads": "h", "keys": "k", "push": "p"}.get(row.get("exchange"), "")
    riders = {True: "r", False: "n"}.get(row.get("riders"), "")
    return f"{row['gpus']}{'g' if row.get('graphs') else ''}{'f' if row.get('funcol') else ''}{exchange}{riders}"


def table(results: dict) -> str:
    head = f"{'size':<11}{'GPUs':>7}" + "".join(f"{s:>10}" for s in (*STAGES, "other")) + \
        f"{'total':>9}{'x':>6}{'steps x':>8}{'tsteps':>8}{'x':>6}{'cold s':>8}{'frames max/mean':>17}{'audio max':>11}"
    lines = [f"distilled, {results['frames']} frames, ms (median of {results['reps']}):", head]
    for row in results["rows"]:
        if "error" in row:
            lines.append(f"{row['size']:<11}{gpu_column(row):>7}  failed: {row['error'].strip().splitlines()[-1]}")
            continue
        c = row.get("vs_1_gpu", {})
        diff = f"{c['frames_max']:.0f} / {c['frames_mean']:.3f}" if "frames_max" in c else "-"
        audio = f"{c['audio_max']:.1e}" if "audio_max" in c else "-"
        x = "-" if row["speedup"] is None else f"{row['speedup']:.2f}"
        sx = "-" if row.get("steps_speedup") is None else f"{row['steps_speedup']:.2f}"
        tsteps = f"{gpu_steps(row) * 1e3:.0f}" if row.get("step_s") else "-"
        tx = "-" if row.get("step_speedup") is None else f"{row['step_speedup']:.2f}"
        lines.append(f"{row['size']:<11}{gpu_column(row):>7}" + "".join(f"{row['stages'].get(s, 0) * 1e3:>10.0f}"
                                                                    for s in (*STAGES, "other"))
                     + f"{row['total'] * 1e3:>9.0f}{x:>6}{sx:>8}{tsteps:>8}{tx:>6}{row['cold_s']:>8.1f}{diff:>17}"
                     f"{audio:>11}")
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.hang_s:
        faulthandler.dump_traceback_later(args.hang_s, exit=True)
    start = time.perf_counter()
    world = init_distributed(device="cpu" if args.smoke else "cuda")
    device, main_rank = world.device, world.main
    dtype = torch.float32 if args.smoke else torch.bfloat16
    from fastltx.models.transformer import sharding
    if args.smoke:  # the tiny passes split over the ranks too (the real threshold would keep them whole)
        sharding.MIN_TOKENS_PER_RANK = sharding.MIN_TOKENS_PER_RANK_EAGER = 1
        sharding.MIN_TOKENS_TO_SPLIT = 0
    if args.min_tokens_to_split is not None:
        sharding.MIN_TOKENS_TO_SPLIT = args.min_tokens_to_split
    if args.min_tokens_per_rank is not None:  # to measure the threshold itself
        sharding.MIN_TOKENS_PER_RANK = sharding.MIN_TOKENS_PER_RANK_EAGER = args.min_tokens_per_rank
    say = (lambda s: print(s, flush=True)) if main_rank else (lambda s: None)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    say(f"{card} x{world.size}, torch {torch.__version__}, {nccl_settings()}; building the models on every rank ...")

    tokenizer_dir = Path(tempfile.mkdtemp(prefix="fastltx-bench-"))
    from fastltx.models.text_encoder.tiny import write_tokenizer
    write_tokenizer(tokenizer_dir / "tokenizer")
    models = build_ours("tiny" if args.smoke else "19b", device, tokenizer_dir / "tokenizer", dtype, log=say)
    transformer = models["_transformer"]
    if args.compile:
        from fastltx.runtime.compile import compile_blocks
        transformer.fuse_projections()
        compile_blocks(transformer)
    dist.barrier()
    weights = sum(unique_bytes(m) for m in models.values() if isinstance(m, torch.nn.Module)) / GIB
    say(f"setup {time.perf_counter() - start:.0f} s; {weights:.2f} GiB of weights on each rank")

    def pipeline(world_or_none) -> DistilledPipeline:
        components = Components(ModelFiles(checkpoint="<built in memory>"), device, dtype, compile=args.compile,
                                world=world_or_none, memory=args.memory)
        components.__dict__.update(models)  # the cached models: nothing is loaded from files
        return DistilledPipeline(components)

    counts = sorted({int(n) for n in args.gpus.split(",")} - {1}) if args.gpus else ([world.size] if world.size > 1 else [])
    if any(n > world.size or n < 1 for n in counts):
        raise SystemExit(f"--gpus {args.gpus}: this world has {world.size} processes")
    worlds = {n: world if n == world.size else world_from_ranks(list(range(n)), device) for n in counts}  # collective
    single = pipeline(None) if main_rank else None
    several = {n: pipeline(w) for n, w in worlds.items() if w is not None}
    clock = StepClock(SimpleDenoiser, device.type == "cuda")  # the distilled pipeline's denoiser
    clocks = ClockLog() if args.clocks and main_rank else None
    results = dict(card=card, world=world.size, torch=torch.__version__, compile=args.compile, frames=args.frames,
                   reps=args.reps, memory=args.memory, smoke=args.smoke, weights_gib=weights, gc_freeze=args.gc_freeze,
                   rows=[])

    def save() -> None:
        if main_rank and args.json:
            Path(args.json).write_text(json.dumps(results, indent=1, default=str))

    def go_on(what: str) -> bool:
        """Rank 0's decision, on every rank: whether the deadline still allows ``what``."""
        spent = time.perf_counter() - start
        ok = world.broadcast(spent < args.deadline_s)
        if not ok:
            say(f"skipping {what}: {spent:.0f} s spent (deadline {args.deadline_s:.0f} s)")
        return ok

    def run_once(gpus: int):
        if gpus == 1:  # rank 0 alone; the others wait here
            return single_run(single, device, kwargs, args.reps, clock, args.gc_freeze, clocks) if main_rank else None
        if gpus in several:  # the first ``gpus`` ranks; a failure here ends the script (a rank left behind would hang)
            return measure(several[gpus], device, kwargs, args.reps, together=worlds[gpus], clock=clock,
                           freeze_gc=args.gc_freeze, clocks=clocks if main_rank else None)
        return None

    variants = ["plain"] * (not args.graphs_only) + ["funcol"] * args.funcol_plain + ["graphs"] * args.graphs
    heads = transformer.cfg.video.heads  # (what "auto" means depends on it: ``exchange_for``)
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        kwargs = dict(prompt=POSITIVE, seed=10, height=h, width=w, num_frames=args.frames, fps=24.0, progress=False)
        base = {}  # variant -> the 1-GPU result
        late = False
        for gpus in (1, *counts):
            plain = {}  # (exchange, riders) -> the plain result
            exchanges = ([None] if gpus == 1 else
                         list(dict.fromkeys(exchange_for(e, gpus, heads, device) for e in args.exchanges)))
            runs = [(v, e, r) for v in variants for e in exchanges for r in (args.riders if gpus > 1 else ["auto"])]
            for variant, exchange, riders in runs:
                graphs = variant == "graphs"
                late = not go_on(f"{size} on {gpus} GPU(s), {variant}, exchange {exchange}, riders {riders}")
                if late:
                    break
                transformer.graph_blocks(graphs)  # new graphs, recorded in the warm-up call
                transformer.sequence_exchange = exchange or "auto"
                transformer.sequence_riders = riders
                with functional_collectives() if variant == "funcol" else contextlib.nullcontext():
                    r = run_once(gpus)
                transformer.graph_blocks(False)
                dist.barrier()
                if main_rank:
                    row = dict(size=size, gpus=gpus, graphs=graphs, funcol=variant == "funcol",
                               exchange=exchange, riders=riders)
                    record(row, r, base.get(variant))
                    if gpus == 1 and "error" not in r:
                        base[variant] = r
                    first = plain.get((exchange, riders))
                    if variant != "plain" and first is not None and "error" not in r and "error" not in first:
                        row["steps_vs_plain"] = steps(r) / steps(first)
                    if variant == "plain":
                        plain[(exchange, riders)] = r
                    results["rows"].append(row)
                    say(f"[{time.perf_counter() - start:5.0f} s] {line(row)}")
                    save()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if late:
                break
    results["elapsed_s"] = time.perf_counter() - start
    save()
    say("\n" + table(results) + f"\nelapsed {results['elapsed_s']:.0f} s")
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    if clocks is not None:
        clocks.close()
    dist.barrier()
    dist.destroy_process_group()
    return results if main_rank else None


if __name__ == "__main__":
    main()
