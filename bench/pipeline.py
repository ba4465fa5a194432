"""The whole distilled pipeline (and a guided one-stage run) at full size: fastltx vs ltx-pipelines 1.0.0.

Every component gets random bf16 weights at its released size, built in memory (no files): the 19B
transformer, Gemma 3 12B with the LTX-2 text projection and connectors, the 19B video VAE encoder
and decoder, the audio VAE decoder and 24 kHz vocoder, the x2 latent upsampler (mid 512, 4 blocks
per stage). ltx-core's models are built on the very same weight tensors (``load_state_dict(...,
assign=True)``), so the card holds one copy and both pipelines compute from identical weights.
Exceptions: fastltx's video decoder holds its own channels-last copy (what its loader does on CUDA);
the reference's Gemma additionally holds the vision tower it never runs.

* fastltx: ``DistilledPipeline`` / ``OneStagePipeline`` over a ``Components`` whose cached models are
  the prebuilt ones.
* ltx-pipelines: its own ``DistilledPipeline`` / ``TI2VidOneStagePipeline`` code, unchanged, with the
  pipeline's ``ModelLedger`` replaced by one that hands out the prebuilt reference models (its
  ``encode_prompts`` then runs the reference text path, ``GemmaTextEncoder.encode`` +
  ``EmbeddingsProcessor``, on the shared Gemma). ``torch.cuda.synchronize`` and its
  ``cleanup_memory`` calls are left as they are. This favours the reference: the real ledger builds
  (reads from disk, moves to the card) every model on every call; the script prints a lower bound
  of that cost from the measured host-to-device bandwidth, but does not add it to the reference.

Timing: wall clock with the device synchronised around each stage (text, stage 1, upsample,
stage 2, decode; the reference's decode is its audio decode plus consuming its lazy video iterator;
"other" is the rest: the copy of the frames to the host, the reference's ``cleanup_memory`` calls
between stages, Python), after one warm-up call of each pipeline, median of ``--reps`` calls,
reference and fastltx alternating. fastltx decodes with its default ``tiling="auto"`` (exact, one
pass when it fits), the reference untiled (``tiling_config=None``, the same result; its CLI's
default tiling does more work). Then
fastltx alone with fused projections + ``torch.compile`` of the blocks (cold first call reported
separately), then with fp8 block linears (``--graphs``: then these through CUDA graphs). Outputs are compared with the reference's (uint8 frames
max / mean difference, audio max difference) as a sanity check: bf16, 48 random blocks, so only
gross errors show.

    python bench/pipeline.py --out DIR            # GPU, full size; TQDM_DISABLE=1 quiets the reference
    python bench/pipeline.py --size tiny --device cpu --height 128 --width 192 --frames 17  # dry run
"""

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import weakref
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.audio import import_reference  # noqa: E402
from bench.common import reference_on_weights  # noqa: E402
from bench.models import build_ours  # noqa: E402
from bench.text_encoder import NEGATIVE, POSITIVE, unique_bytes  # noqa: E402
from bench.video_vae import reference_decoder_on_weights  # noqa: E402
from fastltx.checkpoint.factory import random_state, transformer_config  # noqa: E402
from fastltx.checkpoint.tiny_audio import audio_vae_config, vocoder_config  # noqa: E402
from fastltx.models.video_vae.layouts import vae_config  # noqa: E402
from fastltx.runtime.memory import concrete_device  # noqa: E402

GIB = 2**30
STAGES = ("text", "stage 1", "upsample", "stage 2", "decode")


# ------------------------------------------------------------------------------------------ models
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on_weights(ref_meta: torch.nn.Module, ours: torch.nn.Module, device) -> torch.nn.Module:
    """A reference module (built on meta) given ``ours``' tensors; its computed buffers move to the device."""
    ref_meta.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return ref_meta.to(device).eval().requires_grad_(False)


def reference_text_models(size: str, ours, device, tokenizer_dir: Path):
    """(the reference's GemmaTextEncoder, its EmbeddingsProcessor) on our TextEncoder's tensors; the
    reference's Gemma also holds the vision tower and projector (random) that it never runs."""
    from ltx_core.text_encoders.gemma import EmbeddingsProcessorConfigurator, GemmaTextEncoder
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    from torch import nn
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from fastltx.models.text_encoder.gemma import MAX_LENGTH, parameters_on_meta
    from fastltx.models.text_encoder.tiny import connector_keys, gemma_config, gemma_geometry

    with parameters_on_meta():  # buffers as transformers makes them, parameters assigned below
        full = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(gemma_config(size)))
    state = {f"model.language_model.{k}": t for k, t in ours.gemma.language_model.state_dict().items()}
    for seed, part in enumerate(("vision_tower", "multi_modal_projector"), start=7):
        state.update({f"model.{part}.{k}": t for k, t in
                      random_state(getattr(full.model, part), seed, device=device, dtype=torch.bfloat16).items()})
    state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]  # tied, as the reference loads it
    full.load_state_dict(state, strict=True, assign=True)
    del state
    full = full.to(device).eval().requires_grad_(False)
    ref_gemma = GemmaTextEncoder(model=full, tokenizer=LTXVGemmaTokenizer(str(tokenizer_dir), MAX_LENGTH))

    section = transformer_config("v1", size).to_checkpoint_section(connector_keys("v1", size))
    with torch.device("meta"):
        ref_processor = EmbeddingsProcessorConfigurator.from_config({"transformer": section})
        if size == "tiny":  # the configurator hard-codes 12B's widths and 128 registers (as tests/parity does)
            registers = section["connector_num_learnable_registers"]
            for c in (ref_processor.video_connector, ref_processor.audio_connector):
                c.num_learnable_registers = registers
                c.learnable_registers = nn.Parameter(torch.empty(registers, c.inner_dim))
            assert isinstance(ref_processor.feature_extractor, FeatureExtractorV1)
            ref_processor.feature_extractor.aggregate_embed = nn.Linear(
                gemma_geometry(size).feature_width, ref_processor.video_connector.inner_dim, bias=False)
    return ref_gemma, on_weights(ref_processor, ours.processor, device)


def build(size: str, device: torch.device, tokenizer_dir: Path):
    """Our models (Components names, bench/models.py) and the reference's, on shared tensors."""
    from ltx_core.model.audio_vae import AudioDecoderConfigurator, VocoderConfigurator
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    from ltx_core.model.video_vae import VideoEncoderConfigurator

    from fastltx.layers.conv import to_channels_last
    from fastltx.models.upsampler.tiny import upsampler_config

    ours = build_ours(size, device, tokenizer_dir, channels_last=False, log=lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    ref = {"transformer": reference_on_weights(transformer_config("v1", size), ours["_transformer"])}
    ref["text_encoder"], ref["gemma_embeddings_processor"] = reference_text_models(size, ours["text_encoder"], device,
                                                                                   tokenizer_dir)
    vae = vae_config("v1", size)
    with torch.device("meta"):
        ref_enc = VideoEncoderConfigurator.from_config({"vae": vae.to_checkpoint_section()})
    ref["video_encoder"] = on_weights(ref_enc, ours["video_encoder"], device)
    ref["video_decoder"] = reference_decoder_on_weights("v1", size, ours["video_decoder"])
    # as the loader does on CUDA; the conversion gives our parameters new (channels-last) storage, the
    # reference keeps the plain tensors it was given
    if device.type == "cuda":
        ours["video_decoder"] = to_channels_last(ours["video_decoder"])
    with torch.device("meta"):
        ref_ad = AudioDecoderConfigurator.from_config(
            {"audio_vae": audio_vae_config("v1", size).to_checkpoint_section()})
        ref_voc = VocoderConfigurator.from_config({"vocoder": vocoder_config("v1", size).to_checkpoint_section()})
    ref["audio_decoder"] = on_weights(ref_ad, ours["audio_decoder"], device)
    ref["vocoder"] = on_weights(ref_voc, ours["vocoder"], device)
    ucfg = upsampler_config("spatial_x2", "full" if size == "19b" else "tiny")
    with torch.device("meta"):
        ref_up = LatentUpsamplerConfigurator.from_config(ucfg.to_checkpoint_config())
    ref["spatial_upsampler"] = on_weights(ref_up, ours["upsampler"], device)
    print(f"  reference models on our tensors: {time.perf_counter() - t0:.1f} s", flush=True)
    return ours, ref


class PrebuiltLedger:
    """Stands in for ltx-pipelines' ModelLedger: the same methods, returning prebuilt models."""

    def __init__(self, models: dict):
        self.models = models

    def __getattr__(self, name):
        models = self.__dict__["models"]
        if name not in models:
            raise AttributeError(name)
        return lambda: models[name]


# ------------------------------------------------------------------------------------------ timing
class StageClock:
    """Per-stage wall time of the reference: its module-level stage functions, wrapped."""

    def __init__(self, device):
        self.device, self.times, self.denoise_calls = device, {}, 0

    def add(self, name, seconds):
        self.times[name] = self.times.get(name, 0.0) + seconds

    def timed(self, fn, name=None):
        def wrapped(*args, **kwargs):
            stage = name
            if stage is None:  # denoise_audio_video: stage 1, then stage 2
                self.denoise_calls += 1
                stage = f"stage {self.denoise_calls}"
            sync(self.device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(self.device)
            self.add(stage, time.perf_counter() - start)
            return out
        return wrapped

    def reset(self):
        self.times, self.denoise_calls = {}, 0


def instrument_reference(clock: StageClock):
    """Wrap the stage functions the reference pipelines call through their module namespaces."""
    import ltx_pipelines.distilled as distilled
    import ltx_pipelines.ti2vid_one_stage as one_stage
    for module in (distilled, one_stage):
        module.encode_prompts = clock.timed(module.encode_prompts, "text")
        module.denoise_audio_video = clock.timed(module.denoise_audio_video)
        module.vae_decode_audio = clock.timed(module.vae_decode_audio, "decode")
    distilled.upsample_video = clock.timed(distilled.upsample_video, "upsample")


def run_reference(pipe, clock, device, kwargs):
    """(total s, stages, frames uint8 CPU, waveform CPU, peak bytes above start). The video decodes
    lazily: consuming its iterator is part of the decode stage and of the total."""
    clock.reset()
    base = reset_peak(device)
    sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        video, audio = pipe(**kwargs)
        t = time.perf_counter()
        frames = torch.cat(list(video))
        sync(device)
        clock.add("decode", time.perf_counter() - t)
        frames, wave = frames.cpu(), audio.waveform.float().cpu()  # "other", as fastltx's copy to the host
    total = time.perf_counter() - start
    stages = dict(clock.times)
    stages["other"] = total - sum(stages.values())
    return total, stages, frames, wave, peak_above(device, base)


def run_ours(pipe, device, kwargs):
    base = reset_peak(device)
    sync(device)
    start = time.perf_counter()
    result = pipe(**kwargs)
    total = time.perf_counter() - start
    stages = dict(pipe.timings)
    stages["other"] = total - sum(stages.values())
    return total, stages, result.video, result.audio, peak_above(device, base)


def reset_peak(device) -> int:
    if device.type != "cuda":
        return 0
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def peak_above(device, base: int) -> float:
    return (torch.cuda.max_memory_allocated(device) - base) / GIB if device.type == "cuda" else float("nan")


def median_run(fn, reps: int):
    """Run ``fn`` ``reps`` times; see ``summarize``."""
    return summarize([fn() for _ in range(reps)])


def summarize(runs: list) -> dict:
    """The median total and per-stage medians of runs, the last run's outputs."""
    stages = {k: statistics.median(r[1].get(k, 0.0) for r in runs) for k in runs[-1][1]}
    return dict(total=statistics.median(r[0] for r in runs), totals=[r[0] for r in runs], stages=stages,
                frames=runs[-1][2], audio=runs[-1][3], peak_gib=max(r[4] for r in runs))


def compare(ours, ref) -> dict:
    f_o, f_r = ours["frames"], ref["frames"]
    if f_o.shape != f_r.shape or ours["audio"].shape != ref["audio"].shape:
        return dict(error=f"shapes {tuple(f_o.shape)}/{tuple(f_r.shape)}, "
                          f"{tuple(ours['audio'].shape)}/{tuple(ref['audio'].shape)}")
    diff = (f_o.int() - f_r.int()).abs().float()
    a = (ours["audio"].float() - ref["audio"].float())
    return dict(frames_max=diff.max().item(), frames_mean=diff.mean().item(), audio_max=a.abs().max().item(),
                audio_rel_l2=(a.norm() / ref["audio"].float().norm().clamp_min(1e-12)).item(),
                frame_std_ref=f_r.float().std().item(), audio_absmax_ref=ref["audio"].abs().max().item())


def report_foreign_tensors(models: dict, device, top: int = 6) -> None:
    """Print the largest device tensors alive that are no part of our models (what else holds memory)."""
    ours = {t.untyped_storage().data_ptr() for m in models.values() if isinstance(m, torch.nn.Module)
            for t in [*m.parameters(), *m.buffers()] if t.device == device}
    seen, foreign = set(), []
    for obj in gc.get_objects():
        try:
            if not (isinstance(obj, torch.Tensor) and obj.device == device):
                continue
            ptr = obj.untyped_storage().data_ptr()
        except Exception:  # noqa: BLE001 - gc hands out anything, some of it half-built
            continue
        if ptr in ours or ptr in seen:
            continue
        seen.add(ptr)
        foreign.append((obj.untyped_storage().nbytes(), tuple(obj.shape), str(obj.dtype)))
    foreign.sort(reverse=True)
    total = sum(f[0] for f in foreign)
    print(f"device tensors outside our models: {len(foreign)}, {total / GIB:.2f} GiB; largest: "
          + ", ".join(f"{shape} {dtype} {n / GIB:.2f} GiB" for n, shape, dtype in foreign[:top]), flush=True)


def h2d_bandwidth(device) -> float:
    """Host (pageable) to device copy rate in GB/s, best of three 2 GiB copies."""
    if device.type != "cuda":
        return float("nan")
    host = torch.ones(2 * GIB, dtype=torch.uint8)
    best = float("inf")
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        dev = host.to(device)
        sync(device)
        best = min(best, time.perf_counter() - start)
        del dev
    return 2 * GIB / best / 1e9


# ------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=("19b", "tiny"), default="19b")
    p.add_argument("--device", default="cuda")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--frames", type=int, default=121)
    p.add_argument("--reps", type=int, default=3, help="timed distilled calls per variant")
    p.add_argument("--guided-reps", type=int, default=1, help="timed one-stage calls per variant")
    p.add_argument("--guided-steps", type=int, default=5)
    p.add_argument("--skip", default="", help="comma-separated sections to skip: guided,compile,fp8")
    p.add_argument("--deadline-s", type=float, default=540.0,
                   help="skip the remaining optional sections once this much time has passed")
    p.add_argument("--graphs", action="store_true",
                   help="after the fp8 variant, the same with the blocks through CUDA graphs (graph_blocks)")
    p.add_argument("--compile-on-cpu", action="store_true", help="dry runs: also compile (inductor's CPU build)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for pipeline.json")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    start_all = time.perf_counter()
    device = concrete_device(args.device)  # "cuda:N": what the tensors report (report_foreign_tensors compares)
    cuda = device.type == "cuda"
    skip = set(filter(None, args.skip.split(",")))
    card = torch.cuda.get_device_name(device) if cuda else "cpu (dry run)"
    import transformers
    print(f"card: {card}, torch {torch.__version__}, transformers {transformers.__version__}, size {args.size}",
          flush=True)
    if not cuda:  # dry run: the reference calls torch.cuda.synchronize unconditionally (left alone on the GPU)
        torch.cuda.synchronize = lambda *a, **k: None
    import_reference()  # ltx-core's audio modules need torchaudio (a stand-in where it is missing)
    import ltx_pipelines.distilled as ref_distilled
    import ltx_pipelines.ti2vid_one_stage as ref_one_stage
    from ltx_core.components.guiders import MultiModalGuiderParams

    from fastltx.models.text_encoder.tiny import write_tokenizer
    from fastltx.pipelines import Components, DistilledPipeline, ModelFiles
    from fastltx.pipelines.defaults import LTX2, NEGATIVE_PROMPT, GuidedDefaults
    from fastltx.pipelines.guided import OneStagePipeline
    from fastltx.sampling.guidance import GuiderParams

    tokenizer_dir = write_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer")
    print("building models ...", flush=True)
    ours_models, ref_models = build(args.size, device, tokenizer_dir)
    results: dict = dict(card=card, torch=torch.__version__, size=args.size, height=args.height, width=args.width,
                         frames=args.frames, reps=args.reps, guided_steps=args.guided_steps, sections={})
    if cuda:
        weights = torch.cuda.memory_allocated(device) / GIB
        ref_bytes = sum(unique_bytes(m) for m in ref_models.values())
        ours_bytes = sum(unique_bytes(m) for k, m in ours_models.items() if isinstance(m, torch.nn.Module))
        bw = h2d_bandwidth(device)
        results.update(weights_on_card_gib=weights, ref_weights_gib=ref_bytes / GIB, ours_weights_gib=ours_bytes / GIB,
                       h2d_gbps=bw, ref_rebuild_lower_bound_s=ref_bytes / (bw * 1e9))
        print(f"weights on the card: {weights:.2f} GiB (reference models {ref_bytes / GIB:.2f} GiB, ours "
              f"{ours_bytes / GIB:.2f} GiB, shared); free {torch.cuda.mem_get_info(device)[0] / GIB:.1f} GiB; "
              f"host->device {bw:.1f} GB/s: the reference's per-call rebuild would cost at least "
              f"{results['ref_rebuild_lower_bound_s']:.1f} s (not counted)", flush=True)

    # memory="full": the reference's models share our tensors, so a plan that moved ours out to host
    # memory would leave the device copies held by the reference and bring new ones in (the 2026-11-26
    # "auto" run ran out of memory that way, with the reference's transformer still on the card)
    components = Components(ModelFiles(checkpoint="<built in memory>"), device, torch.bfloat16, memory="full")
    components.__dict__.update(ours_models)  # the cached models: nothing is loaded from files
    transformer = ours_models["_transformer"]
    blk = min(29, transformer.cfg.num_layers - 1)  # the official STG block (29); the tiny model has 2 blocks
    video_g, audio_g = GuiderParams(3.0, 1.0, (blk,), 0.7, 3.0), GuiderParams(7.0, 1.0, (blk,), 0.7, 3.0)

    class BenchOneStage(OneStagePipeline):
        def defaults(self):  # no checkpoint header to read the model version from: LTX-2's
            return GuidedDefaults(LTX2.steps, video_g, audio_g)

    ours_distilled, ours_one = DistilledPipeline(components), BenchOneStage(components)
    ledger = PrebuiltLedger(ref_models)
    ref_dist = ref_distilled.DistilledPipeline("<built in memory>", None, "<built in memory>", loras=[], device=device)
    ref_one = ref_one_stage.TI2VidOneStagePipeline("<built in memory>", None, loras=[], device=device)
    ref_dist.model_ledger = ref_one.model_ledger = ledger
    clock = StageClock(device)
    instrument_reference(clock)

    size = dict(height=args.height, width=args.width, num_frames=args.frames)
    d_ref = dict(prompt=POSITIVE, seed=10, frame_rate=24.0, images=[], tiling_config=None, **size)
    d_ours = dict(prompt=POSITIVE, seed=10, fps=24.0, progress=False, **size)  # tiling "auto": exact, as untiled
    rp = lambda g: MultiModalGuiderParams(cfg_scale=g.cfg_scale, stg_scale=g.stg_scale,  # noqa: E731
                                          stg_blocks=list(g.stg_blocks), rescale_scale=g.rescale_scale,
                                          modality_scale=g.modality_scale, skip_step=g.skip_step)
    g_ref = dict(prompt=POSITIVE, negative_prompt=NEGATIVE_PROMPT, seed=11, frame_rate=24.0,
                 num_inference_steps=args.guided_steps, video_guider_params=rp(video_g),
                 audio_guider_params=rp(audio_g), images=[], **size)
    g_ours = dict(prompt=POSITIVE, negative_prompt=NEGATIVE_PROMPT, seed=11, fps=24.0, steps=args.guided_steps,
                  video_guidance=video_g, audio_guidance=audio_g, progress=False, **size)
    sections = results["sections"]

    def out_of_time(what: str) -> bool:
        spent = time.perf_counter() - start_all
        if spent > args.deadline_s:
            print(f"skipping {what}: {spent:.0f} s spent (deadline {args.deadline_s:.0f} s)", flush=True)
            return True
        return False

    def record(name, r, ref=None):
        entry = {k: v for k, v in r.items() if k not in ("frames", "audio")}
        if ref is not None:
            entry["vs_reference"] = compare(r, ref)
        if "cold_s" in r:
            entry["cold_s"] = r["cold_s"]
        sections[name] = entry
        st = " ".join(f"{k} {v * 1e3:.0f}" for k, v in r["stages"].items())
        print(f"[{time.perf_counter() - start_all:6.0f} s] {name}: {r['total'] * 1e3:.0f} ms "
              f"(runs {', '.join(f'{t * 1e3:.0f}' for t in r['totals'])}; {st}; peak +{r['peak_gib']:.2f} GiB)"
              + (f"; vs reference {entry['vs_reference']}" if ref is not None else ""), flush=True)
        save(results, args.out)

    def guarded(name, fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - report and go on with the other sections
            traceback.print_exc()
            sections[name] = dict(error=traceback.format_exc(limit=3)[-800:])
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            return None

    # ---- distilled, eager: one warm-up call each, then alternating timed calls
    def distilled_eager():
        print("warm-up: reference distilled, fastltx distilled", flush=True)
        run_reference(ref_dist, clock, device, d_ref)
        run_ours(ours_distilled, device, d_ours)
        runs_r, runs_o = [], []
        for _ in range(args.reps):
            runs_r.append(run_reference(ref_dist, clock, device, d_ref))
            runs_o.append(run_ours(ours_distilled, device, d_ours))
        ref, ours = summarize(runs_r), summarize(runs_o)
        record("distilled / ltx-pipelines", ref)
        record("distilled / fastltx eager", ours, ref)
        return ref
    ref_d = guarded("distilled", distilled_eager)

    # ---- guided one-stage, 5 steps: reference, ours batched, ours sequential
    ref_g = None
    if "guided" not in skip and not out_of_time("guided"):
        def guided():
            out = {}
            for name, fn in (("reference", lambda: run_reference(ref_one, clock, device, g_ref)),
                             ("batched", lambda: run_ours(ours_one, device, dict(g_ours, batched_guidance=True))),
                             ("sequential", lambda: run_ours(ours_one, device, dict(g_ours, batched_guidance=False)))):
                fn()  # warm-up
                out[name] = median_run(fn, args.guided_reps)
            record(f"one-stage {args.guided_steps} steps / ltx-pipelines", out["reference"])
            record(f"one-stage {args.guided_steps} steps / fastltx eager batched", out["batched"], out["reference"])
            record(f"one-stage {args.guided_steps} steps / fastltx eager sequential", out["sequential"],
                   out["reference"])
            return out["reference"]
        ref_g = guarded("guided", guided)

    # ---- fastltx alone from here: the reference's transformer goes (fusing would otherwise hold two copies)
    alive = weakref.ref(ref_models.pop("transformer"))
    del ref_dist, ref_one, ledger
    gc.collect()
    if alive() is not None:
        holders = [type(r).__name__ + (f" {list(r)[:8]}" if isinstance(r, dict) else "")
                   for r in gc.get_referrers(alive())]
        print(f"reference transformer still referenced by: {holders}", flush=True)
    if cuda:
        torch.cuda.empty_cache()
        print(f"allocated after releasing the reference transformer: "
              f"{torch.cuda.memory_allocated(device) / GIB:.2f} GiB", flush=True)
        report_foreign_tensors(ours_models, device)
    if hasattr(torch, "_dynamo"):
        for knob in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, 64)

    def compiled_variant(label: str, change, warmups: int = 1):
        torch._dynamo.reset()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            print(f"allocated before '{label}': {torch.cuda.memory_allocated(device) / GIB:.2f} GiB", flush=True)
        change()
        cold = run_ours(ours_distilled, device, d_ours)  # compiles the block for the stage-1 and stage-2 shapes
        for _ in range(warmups - 1):
            run_ours(ours_distilled, device, d_ours)
        print(f"cold first call ({label}): {cold[0]:.1f} s", flush=True)
        r = median_run(lambda: run_ours(ours_distilled, device, d_ours), args.reps)
        r["cold_s"] = cold[0]
        record(f"distilled / fastltx {label}", r, ref_d)
        if ref_g is not None and "guided" not in skip and not out_of_time(f"one-stage {label}"):
            fn = lambda: run_ours(ours_one, device, dict(g_ours, batched_guidance=True))  # noqa: E731
            cold = fn()
            g = median_run(fn, args.guided_reps)
            g["cold_s"] = cold[0]
            record(f"one-stage {args.guided_steps} steps / fastltx {label} batched", g, ref_g)

    if "compile" not in skip and not out_of_time("compile"):
        from fastltx.runtime.compile import compile_blocks
        if cuda or args.compile_on_cpu:
            guarded("compile", lambda: compiled_variant(
                "compiled", lambda: (transformer.fuse_projections(), compile_blocks(transformer))))
        else:  # dry run: exercise the calls without inductor's CPU build
            transformer.fuse_projections()
            print("dry run: fused projections; compile skipped on CPU", flush=True)
    if "fp8" not in skip and cuda and not out_of_time("fp8"):
        from fastltx.layers.linear import fp8_supported
        # the conversion frees each bf16 linear as it goes, unless something still holds it: then the fp8
        # copies (half the linears' bytes) come on top. The 2026-11-26 run ran out of memory here (78 GiB
        # allocated at the conversion, see docs/benchmarks.md): say so up front instead of failing midway.
        if fp8_supported(device):
            def fp8_change():
                from fastltx.runtime.compile import compile_blocks
                torch._dynamo.reset()
                gc.collect()
                torch.cuda.empty_cache()
                if "forward" not in transformer.transformer_blocks[0].__dict__:  # the bf16 compile was skipped
                    transformer.fuse_projections()
                linears = sum(m.weight.numel() for m in transformer.transformer_blocks.modules()
                              if isinstance(m, torch.nn.Linear))
                free = torch.cuda.mem_get_info(device)[0]
                print(f"fp8: {linears / 1e9:.2f} G linear weights; {free / GIB:.1f} GiB free "
                      f"(fp8 copies {linears / GIB:.1f} GiB if nothing is freed on the way)", flush=True)
                print(f"fp8 linears: {transformer.to_fp8()}; allocated "
                      f"{torch.cuda.memory_allocated(device) / GIB:.2f} GiB", flush=True)
                report_foreign_tensors(ours_models, device)
                compile_blocks(transformer)  # scaled fp8 matmuls only pay compiled (fp8_weight_only)
            guarded("fp8", lambda: compiled_variant("compiled fp8", fp8_change))
    if args.graphs and cuda and not out_of_time("graphs") and "fp8" not in skip:
        # the fp8 model through CUDA graphs (Components(cuda_graphs=True)): the first call of each shape
        # runs plain, the second records; both before the timed calls
        guarded("graphs", lambda: compiled_variant("compiled fp8 CUDA graphs", transformer.graph_blocks, warmups=2))

    results["elapsed_s"] = time.perf_counter() - start_all
    save(results, args.out)
    print_tables(results)
    return results


def save(results: dict, out: str | None) -> None:
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "pipeline.json").write_text(json.dumps(results, indent=1, default=str))


def print_tables(results: dict) -> None:
    s = results["sections"]
    print()
    for prefix, stages in (("distilled", STAGES), (f"one-stage {results['guided_steps']} steps", ("text", "stage 1",
                                                                                                   "decode"))):
        rows = [(k.split(" / ", 1)[1], v) for k, v in s.items() if k.startswith(prefix + " / ") and "total" in v]
        if not rows:
            continue
        base = dict(rows).get("ltx-pipelines")
        print(f"{prefix}, {results['frames']} frames {results['height']}x{results['width']} ({results['size']}), "
              "ms (median):")
        print(f"{'':<28}" + "".join(f"{st:>10}" for st in (*stages, "other")) + f"{'total':>10}{'ratio':>7}"
              f"{'denoise':>9}{'ratio':>7}{'peak GiB':>9}")
        den = lambda v: v["stages"].get("stage 1", 0) + v["stages"].get("stage 2", 0)  # noqa: E731
        for name, v in rows:
            ratio = v["total"] / base["total"] if base else float("nan")
            dratio = den(v) / den(base) if base else float("nan")
            print(f"{name:<28}" + "".join(f"{v['stages'].get(st, 0) * 1e3:>10.0f}" for st in (*stages, "other"))
                  + f"{v['total'] * 1e3:>10.0f}{ratio:>7.3f}{den(v) * 1e3:>9.0f}{dratio:>7.3f}{v['peak_gib']:>9.2f}")
        for name, v in rows:
            if "cold_s" in v:
                print(f"  {name}: cold first call {v['cold_s']:.1f} s")
            if "vs_reference" in v:
                c = v["vs_reference"]
                print(f"  {name} vs ltx-pipelines: " + (c["error"] if "error" in c else
                      f"frames max {c['frames_max']:.0f} mean {c['frames_mean']:.3f} (ref frame std "
                      f"{c['frame_std_ref']:.1f}); audio max {c['audio_max']:.2e} rel L2 {c['audio_rel_l2']:.2e} "
                      f"(ref |max| {c['audio_absmax_ref']:.2e})"))
    for k, v in s.items():
        if "error" in v:
            print(f"FAILED {k}: {v['error'].strip().splitlines()[-1]}")
    if "h2d_gbps" in results:
        print(f"weights on card {results['weights_on_card_gib']:.1f} GiB; reference per-call rebuild (not counted) "
              f">= {results['ref_rebuild_lower_bound_s']:.1f} s at {results['h2d_gbps']:.1f} GB/s host->device")
    print(f"card: {results['card']}, torch {results['torch']}; elapsed {results.get('elapsed_s', 0):.0f} s")


if __name__ == "__main__":
    main()
