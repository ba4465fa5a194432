"""The 19B set on 24 GB and 16 GB cards (issue 10): the distilled pipeline under --memory full / 24g / 16g.

Each mode runs in its own process (fresh CUDA context, fresh peak host memory). For a budget mode the
card is capped with ``torch.cuda.set_per_process_memory_fraction`` to that many GiB, so the plan
(and the allocator) see what such a card offers; ``full`` runs uncapped with every model resident.

Weights are random at full size. The transformer, video VAE, audio VAE and vocoder are written once
into one checkpoint in the official layout (bf16, ~37 GB) and the x2 upsampler into its own file, so
loading runs as it does for the released files (memory map, fp8 conversion layer by layer, host
homes, streamed blocks). The text encoder (Gemma 3 12B with the LTX-2 projection and connectors,
~25 GB) is built in host memory by each process and handed to the pipeline there, where the plan
homes it and brings it in in its form like a loaded one: the disk does not hold a second file of
that size. Its host copy therefore counts in the peak RSS of every mode alike.

Per mode: load + first call ("cold"), then a second call ("warm", per-stage times), the peak GPU
memory the caching allocator reserved (what the card must have), the peak RSS (VmHWM), and the
mean absolute difference of the frames to the ``full`` run's (bf16 vs fp8 sanity: random weights,
so only gross errors show).

    python bench/memory.py --out DIR             # eager; --compile: compiled blocks in every mode
    python bench/memory.py --out DIR --devices 0,1,2,3   # the six runs over four GPUs at once
    python bench/memory.py --size tiny --device cpu --modes full,3m --sizes 64x128 --frames 9   # dry run
"""

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB = 2**30
PROMPT = "A red fox trots across a snowy field at dawn, its breath steaming, the camera tracking it low."


# ------------------------------------------------------------------------------------------ files
def write_files(folder: Path, size: str, device) -> tuple[Path, Path]:
    """The checkpoint (transformer, VAEs, vocoder; no text parts: the text encoder comes built) and
    the upsampler, random, generated on ``device``; written once."""
    from fastltx.checkpoint.factory import MODEL_VERSION, PARTS, iter_random_state, write_checkpoint
    from fastltx.models.upsampler.model import LatentUpsampler
    from fastltx.models.upsampler.tiny import upsampler_config
    ckpt, up = folder / f"ltx2-{size}.safetensors", folder / f"upsampler-{size}.safetensors"
    if not ckpt.exists():
        config, tensors = {}, {}
        for name in ("transformer", "vae", "audio_vae", "vocoder"):
            part = PARTS[name]("v1", size)
            config.update(part.config)
            for i, (prefix, module) in enumerate(part.modules.items()):
                seed = zlib.crc32(f"{name}:{i}".encode())
                for key, t in iter_random_state(module, seed, device):
                    full = prefix + key
                    tensors[full] = (part.adjust(full, t) if part.adjust else t).cpu()
        write_checkpoint(ckpt, tensors, config, MODEL_VERSION["v1"])
        del tensors
    if not up.exists():
        cfg = upsampler_config("spatial_x2", "full" if size == "19b" else "tiny")
        with torch.device("meta"):
            model = LatentUpsampler(cfg)
        write_checkpoint(up, {k: t.cpu() for k, t in iter_random_state(model, 6, device)}, cfg.to_checkpoint_config())
    return ckpt, up


def text_encoder_on_host(size: str, device, tokenizer_dir: Path):
    """Gemma 3 (12B for "19b") + the LTX-2 text projection and connectors, random, on the CPU."""
    from transformers import Gemma3TextConfig

    from fastltx.checkpoint.factory import iter_random_state
    from fastltx.models.text_encoder import GemmaEncoder, TextEncoder, TextProcessor
    from fastltx.models.text_encoder.gemma import MAX_LENGTH, build_language_model, load_tokenizer
    from fastltx.models.text_encoder.tiny import gemma_config, text_config
    gemma = build_language_model(Gemma3TextConfig(**gemma_config(size)["text_config"]))
    state = {k: t.cpu() for k, t in iter_random_state(gemma, 0, device)}
    gemma.load_state_dict(state, strict=True, assign=True)
    with torch.device("meta"):
        processor = TextProcessor(text_config("v1", size))
    state = {k: t.cpu() for k, t in iter_random_state(processor, 1, device)}
    processor.load_state_dict(state, strict=True, assign=True)
    del state
    return TextEncoder(GemmaEncoder(gemma, load_tokenizer(tokenizer_dir), MAX_LENGTH), processor.eval()).eval()


# ------------------------------------------------------------------------------------------ one mode
def run_mode(args) -> dict:
    from fastltx.models.text_encoder.tiny import write_tokenizer
    from fastltx.pipelines import Components, DistilledPipeline, ModelFiles
    from fastltx.runtime.memory import concrete_device, parse_memory, peak_rss
    device = concrete_device(args.device)  # set_per_process_memory_fraction insists on an index
    cuda = device.type == "cuda"
    setting = parse_memory(args.child)
    height, width = (int(v) for v in args.child_size.split("x"))
    start = time.perf_counter()
    tokenizer = write_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer")
    encoder = text_encoder_on_host(args.size, device, tokenizer)  # generated on the GPU, one tensor at a time
    built = time.perf_counter() - start
    if cuda:  # the generation's cached blocks are not the run's: give them back, then cap the card
        torch.cuda.empty_cache()
        if setting.budget is not None:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(setting.budget / total, 1.0), device)
    components = Components(ModelFiles(args.checkpoint, upsampler=args.upsampler), device, torch.bfloat16,
                            memory=setting, compile=args.compile)
    components.__dict__["text_encoder"] = encoder  # on the host: homed by the plan, brought in as planned
    del encoder
    pipe = DistilledPipeline(components)
    call = dict(prompt=PROMPT, seed=10, height=height, width=width, num_frames=args.frames, progress=False)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    first = pipe(**call)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = pipe(**call)
    warm = time.perf_counter() - t0
    frames = second.video
    if args.profile_dir:  # a third call under the profiler: host-side calls (allocator, copies) and kernels
        Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
        profiled(lambda: pipe(**call), Path(args.profile_dir) / f"profile-{setting}-{height}x{width}.txt")
    out = dict(mode=str(setting), size=f"{height}x{width}", frames=args.frames, cold_s=cold, warm_s=warm,
               build_text_encoder_s=built, stages=second.timings, first_stages=first.timings,
               peak_rss_gib=(peak_rss() or 0) / GIB, plan=components.memory.plan.describe(),
               frames_mean=float(frames.float().mean()), frames_std=float(frames.float().std()))
    if cuda:
        out.update(peak_reserved_gib=torch.cuda.max_memory_reserved(device) / GIB,
                   peak_allocated_gib=torch.cuda.max_memory_allocated(device) / GIB,
                   card=torch.cuda.get_device_name(device))
    if args.frames_to:
        torch.save(frames, args.frames_to)
    return out


def profiled(fn, path: Path, top: int = 15) -> None:
    """Run ``fn`` under torch.profiler; write to ``path``, for each pipeline stage (its "stage NAME"
    range), the entries that took the most self host time and device time inside it: where a warm
    call's time goes that the stage times do not explain (allocator calls, waits, copies)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
    events = list(prof.events())
    stages = [e for e in events if e.name.startswith("stage ")]
    lines = []
    for st in stages:
        lo, hi = st.time_range.start, st.time_range.end
        host, device = {}, {}
        for e in events:
            if e is st or e.name.startswith("stage ") or not (lo <= e.time_range.start <= hi):
                continue
            if e.device_type == DeviceType.CPU:  # operators and runtime calls: their own host time
                host[e.name] = host.get(e.name, 0) + e.self_cpu_time_total
            else:  # kernels and copies: their time on the device
                device[e.name] = device.get(e.name, 0) + e.time_range.elapsed_us()
        lines.append(f"{st.name}: {(hi - lo) / 1e3:.1f} ms")
        for label, table in (("host", host), ("device", device)):
            total = sum(table.values())
            lines.append(f"  self {label} time {total / 1e3:.1f} ms; top:")
            for name, t in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
                lines.append(f"    {t / 1e3:9.1f} ms  {name[:100]}")
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ plans only
def plans(size: str, modes: list[str], outputs: list[str], frames: int, card_gib: float = 80.0) -> str:
    """The plans the 19B set gets on cards of each mode's size (the ``full`` one: ``card_gib``), from
    models built on meta: no weights, no GPU. What ``--plan-only`` prints."""
    from types import SimpleNamespace

    from transformers import Gemma3TextConfig

    from fastltx.checkpoint.factory import PARTS, transformer_config
    from fastltx.layers.linear import to_fp8
    from fastltx.models.text_encoder import TextProcessor
    from fastltx.models.text_encoder.gemma import build_language_model
    from fastltx.models.text_encoder.tiny import gemma_config, text_config
    from fastltx.models.transformer import LTXTransformer, fp8_linear
    from fastltx.models.upsampler.model import LatentUpsampler
    from fastltx.models.upsampler.tiny import upsampler_config
    from fastltx.models.video_vae import VideoDecoder
    from fastltx.models.video_vae.layouts import vae_config
    from fastltx.models.text_encoder.encoder import to_fp8_weights
    from fastltx.pipelines.memory import fp8_processor_bytes, stage_needs
    from fastltx.runtime.memory import (GiB, ModelSize, MemorySetting, budget_for, layered_size, module_bytes,
                                        parse_memory, plan_memory)
    bf16 = torch.bfloat16
    with torch.device("meta"):
        transformer = LTXTransformer(transformer_config("v1", size))
        processor = TextProcessor(text_config("v1", size))
        decoder = VideoDecoder(vae_config("v1", size).decoder)
        upsampler = LatentUpsampler(upsampler_config("spatial_x2", "full" if size == "19b" else "tiny"))
        audio = {name: PARTS[name]("v1", size) for name in ("audio_vae", "vocoder")}
    text_cfg = Gemma3TextConfig(**gemma_config(size)["text_config"])
    gemma = build_language_model(text_cfg)
    t = layered_size(gemma, gemma.layers, bf16, to_fp8_weights)
    audio_bytes = {name: sum(module_bytes(m, bf16) for prefix, m in part.modules.items() if "encoder" not in prefix)
                   for name, part in audio.items()}
    sizes = {"transformer": layered_size(transformer, transformer.transformer_blocks, bf16,
                                         lambda layer: to_fp8(layer, fp8_linear)),
             "text_encoder": ModelSize(t.other + module_bytes(processor, bf16), t.layer, t.layers, t.fp8_layer,
                                       host=module_bytes(gemma.embed_tokens, bf16),
                                       fp8_other=t.other + fp8_processor_bytes(processor.cfg, bf16)),
             "upsampler": ModelSize(module_bytes(upsampler, bf16)), "video_decoder": ModelSize(module_bytes(decoder, bf16)),
             "audio_decoder": ModelSize(audio_bytes["audio_vae"]), "vocoder": ModelSize(audio_bytes["vocoder"])}
    configs = {"transformer": transformer.cfg, "text_encoder": text_cfg, "video_decoder": decoder.cfg}
    memory = SimpleNamespace(c=SimpleNamespace(device=torch.device("cuda"), dtype=bf16), config=configs.get)
    lines = []
    for h, w in (tuple(int(v) for v in hw.split("x")) for hw in outputs):
        needs = stage_needs(memory, h, w, frames, 24.0, True, 1, 0)
        lines.append(f"distilled, {frames} frames at {h}x{w}: " + ", ".join(
            f"{n.stage} {n.activations / GiB:.1f} GiB" for n in needs) + " of activations")
        for mode in modes:
            setting = parse_memory(mode)
            card = card_gib * GiB if setting.full or setting.budget is None else setting.budget
            if setting.full or setting.budget is None:  # what auto does on the big card
                setting = MemorySetting(f"auto (a {card_gib:g} GiB card)")
            budget = budget_for(setting, int(card))
            try:
                plan = plan_memory(setting, budget, sizes, needs, ["transformer", "text_encoder"], usable=int(card))
                lines.append("  " + plan.describe().replace("\n", "\n  "))
            except Exception as e:  # noqa: BLE001 - an OutOfMemory is a result here
                lines.append(f"  {mode}: {e}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ driver
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=("19b", "tiny"), default="19b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--modes", default="full,24g,16g", help="memory settings, one process each")
    p.add_argument("--sizes", default="512x768,1024x1536", help="output sizes HxW, in this order")
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--work", default=None, help="folder for the weight files (default: a temporary one)")
    p.add_argument("--devices", default=None,
                   help="GPUs to run the (size, mode) processes on at once, e.g. 0,1,2,3 (each sees one GPU; they "
                        "share the host's copy bandwidth and CPUs). Default: one after the other on --device")
    p.add_argument("--deadline-s", type=float, default=540.0, help="start no new run after this many seconds")
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for memory.json")
    p.add_argument("--plan-only", action="store_true", help="print the plans from models built on meta (no GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks in every mode "
                   "(the cold call then includes compiling)")
    p.add_argument("--profile", action="store_true", help="profile a third call of each mode: top host and "
                   "device entries written next to memory.json (profile-MODE-HxW.txt)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-size", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--upsampler", help=argparse.SUPPRESS)
    p.add_argument("--frames-to", help=argparse.SUPPRESS)
    p.add_argument("--profile-to", dest="profile_dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.profile and not args.out:
        raise SystemExit("--profile writes next to memory.json: give --out")
    if args.plan_only:
        print(plans(args.size, args.modes.split(","), args.sizes.split(","), args.frames))
        return {}
    if args.child:
        result = run_mode(args)
        print("RESULT " + json.dumps(result), flush=True)
        return result
    start = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="fastltx-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run_modes(args, work, start)
    finally:
        if args.work is None:  # the ~38 GB checkpoint must not outlive the run (64 GB device disks)
            shutil.rmtree(work, ignore_errors=True)


def run_modes(args, work: Path, start: float) -> dict:
    ckpt, up = write_files(work, args.size, args.device)
    if torch.device(args.device).type == "cuda":  # the children need the card: keep no cached blocks here
        torch.cuda.empty_cache()
    print(f"weights written in {time.perf_counter() - start:.0f} s: {ckpt.stat().st_size / GIB:.1f} GiB + "
          f"{up.stat().st_size / GIB:.2f} GiB", flush=True)
    results = dict(size=args.size, frames=args.frames, runs=[], devices=args.devices)
    jobs = [(size, mode) for size in args.sizes.split(",") for mode in args.modes.split(",")]
    devices = args.devices.split(",") if args.devices else [None]
    free = queue.Queue()
    for d in devices:
        free.put(d)
    lock = threading.Lock()

    def job(size: str, mode: str) -> None:
        spent = time.perf_counter() - start
        if spent > args.deadline_s:
            print(f"skipping {mode} {size}: {spent:.0f} s spent", flush=True)
            return
        device = free.get()  # a GPU of its own (--devices), else the one device, one run after the other
        try:
            r = run_one(args, work, ckpt, up, size, mode, device)
        finally:
            free.put(device)
        with lock:
            results["runs"].append(r)
            if "error" not in r:
                print_run(r)
            save(results, args.out)

    with ThreadPoolExecutor(len(devices)) as pool:
        for f in [pool.submit(job, size, mode) for size, mode in jobs]:
            f.result()
    order = {job: i for i, job in enumerate(jobs)}
    results["runs"].sort(key=lambda r: order[r["size"], r["mode"]])
    for r in results["runs"]:  # the frames against the uncapped run of the same size
        base = work / f"frames-full-{r['size']}.pt"
        if "error" not in r and r["mode"] != "full" and base.exists():
            frames, full = torch.load(work / f"frames-{r['mode']}-{r['size']}.pt"), torch.load(base)
            r["frames_vs_full_mean_abs"] = float((frames.float() - full.float()).abs().mean())
    results["elapsed_s"] = time.perf_counter() - start
    save(results, args.out)
    print_table(results)
    return results


def run_one(args, work: Path, ckpt: Path, up: Path, size: str, mode: str, device: str | None) -> dict:
    """One (output size, memory mode) in a process of its own; ``device``: the GPU it sees alone."""
    cmd = [sys.executable, __file__, "--child", mode, "--child-size", size, "--size", args.size,
           "--device", args.device, "--frames", str(args.frames), "--checkpoint", str(ckpt),
           "--upsampler", str(up), "--frames-to", str(work / f"frames-{mode}-{size}.pt")] \
        + (["--compile"] if args.compile else []) + (["--profile-to", str(Path(args.out or work))] if args.profile else [])
    env = dict(os.environ)  # as the CLI runs (older torch reads the allocator setting only from here)
    if "PYTORCH_ALLOC_CONF" not in env:
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"{mode} {size}: FAILED ({(proc.stderr.strip().splitlines() or ['?'])[-1]})", flush=True)
        return dict(mode=mode, size=size, error=proc.stderr[-2000:])
    return json.loads(lines[-1][len("RESULT "):])


def print_run(r: dict) -> None:
    stages = " ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
    gpu = f"GPU peak {r['peak_reserved_gib']:.1f} GiB reserved / {r['peak_allocated_gib']:.1f} allocated, " \
        if "peak_reserved_gib" in r else ""
    print(f"{r['mode']:>5} {r['size']}: cold {r['cold_s']:.1f} s, warm {r['warm_s']:.1f} s ({stages}); {gpu}"
          f"RSS peak {r['peak_rss_gib']:.1f} GiB" + (f"; frames vs full {r['frames_vs_full_mean_abs']:.2f}"
                                                      if "frames_vs_full_mean_abs" in r else ""), flush=True)
    print("      " + r["plan"].replace("\n", "\n      "), flush=True)


def print_table(results: dict) -> None:
    runs = [r for r in results["runs"] if "error" not in r]
    if not runs:
        return
    print("\n| size | mode | warm s | vs full | cold s | GPU peak GiB | RSS peak GiB | text | stage 1 | upsample | "
          "stage 2 | decode |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = {r["size"]: r["warm_s"] for r in runs if r["mode"] == "full"}
    for r in runs:
        ratio = r["warm_s"] / base[r["size"]] if r["size"] in base else float("nan")
        st = r["stages"]
        print(f"| {r['size']} | {r['mode']} | {r['warm_s']:.2f} | {ratio:.2f}x | {r['cold_s']:.1f} | "
              f"{r.get('peak_reserved_gib', 0):.1f} | {r['peak_rss_gib']:.1f} | "
              + " | ".join(f"{st.get(k, 0):.2f}" for k in ("text", "stage 1", "upsample", "stage 2", "decode")) + " |")


def save(results: dict, out: str | None) -> None:
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "memory.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
