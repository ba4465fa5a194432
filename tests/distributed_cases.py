"""Multi-process checks run by tests/unit/test_distributed.py: every case computes the single-process
result itself and compares the distributed one with it (float32, tiny models, gloo on the CPU).

``run_all(rank, size, port, folder, demo)`` is the spawned entry point (``demo``: a folder holding
the demo model set, written before the processes start); each rank writes
``folder/rank{r}.json`` with {case: max relative error (or an error message)}.
"""

import dataclasses
import json
import os
import traceback
from pathlib import Path

import torch

from fastltx.checkpoint.factory import random_transformer, transformer_config
from fastltx.layers.sequence_parallel import resolve_exchange
from fastltx.models.transformer import ModalityInput, Perturbation
from fastltx.pipelines.request import InputError
from fastltx.runtime.compile import compile_blocks, uncompile_blocks
from fastltx.runtime import distributed
from fastltx.runtime.cuda_graph import between_pieces
from fastltx.runtime.distributed import World, init_distributed, world_from_ranks
from fastltx.sampling.denoisers import GuidedDenoiser, SimpleDenoiser
from fastltx.sampling.guidance import GuidanceSchedule, GuiderParams
from fastltx.sampling.state import TokenState
from tests.helpers import audio_positions, max_rel_error, video_positions

FPS, TEXT = 24.0, 5


def tiny_config(version: str = "v1", heads: int = 4, layers: int = 2):
    """The tiny geometry with ``heads`` video heads of 8 channels (4: divisible by 2 and 4 ranks)."""
    cfg = transformer_config(version, "tiny", num_layers=layers)
    video = dataclasses.replace(cfg.video, heads=heads, head_dim=8, context_dim=8 * heads)
    cfg = dataclasses.replace(cfg, video=video)
    if heads % 2:  # (the audio's cross-attention width splits into the video's heads: RoPE pairs per head)
        audio = dataclasses.replace(cfg.audio, heads=heads, head_dim=8, context_dim=8 * heads)
        cfg = dataclasses.replace(cfg, audio=audio)
    return cfg


def model(version: str, heads: int = 4):
    """Two blocks (``tiny_config``)."""
    return random_transformer(tiny_config(version, heads), seed=11, dtype=torch.float32)


def inputs(m, grid=(2, 3, 5), appended=0, sigmas=(0.8,), clean=0, mask=False, audio_tokens=7, seed=0):
    """Video (grid tokens + ``appended`` conditioning tokens with t = 0, float32 positions) and audio."""
    cfg, gen = m.cfg, torch.Generator().manual_seed(seed)
    sigma = torch.tensor(sigmas)
    b = len(sigmas)
    pos = video_positions(*grid, FPS, b, torch.float32)
    if appended:
        key = video_positions(1, grid[1], grid[2], FPS, b, torch.float32)[:, :, :appended].clone()
        key[:, 0] += 16 / FPS
        pos = torch.cat([pos, key], dim=2)
    n = pos.shape[2]
    keep = torch.ones(b, n, 1)
    keep[:, :clean] = 0
    keep[:, n - appended:] = 0
    text = cfg.caption_channels or cfg.video.context_dim
    strengths = None
    if mask:
        strengths = torch.rand(b, n, n, generator=gen)
        strengths[strengths < 0.3] = 0
        strengths[:, torch.arange(n), torch.arange(n)] = 1
    video = ModalityInput(torch.randn(b, n, cfg.video.in_channels, generator=gen), sigma, keep * sigma.view(-1, 1, 1),
                          pos, torch.randn(b, TEXT, text, generator=gen), attention_mask=strengths)
    audio = ModalityInput(torch.randn(b, audio_tokens, cfg.audio.in_channels, generator=gen), sigma,
                          sigma.view(-1, 1, 1).expand(b, audio_tokens, 1).contiguous(),
                          audio_positions(audio_tokens, b), torch.randn(b, TEXT, text, generator=gen))
    return video, audio


def _error(ours, ref) -> float:
    return max(max_rel_error(o, r) for o, r in zip(ours, ref) if r is not None)


def sequence_cases(world: World, prefix: str) -> dict:
    """The transformer with its video tokens split over every rank of ``world``."""
    out = {}
    v1, v2 = model("v1"), model("v2")
    stg = [Perturbation(), Perturbation.stg((1,)), Perturbation.isolate_modalities()]
    cases = {
        "even": (v1, inputs(v1, grid=(2, 2, 4)), None),
        "uneven_clean": (v1, inputs(v1, grid=(2, 3, 5), clean=6, sigmas=(0.8, 0.4)), None),
        "appended_mask": (v1, inputs(v1, grid=(2, 3, 5), appended=7, mask=True, seed=1), None),
        "fewer_tokens_than_ranks": (v1, inputs(v1, grid=(1, 1, 3), seed=2), None),
        "perturbations": (v1, inputs(v1, sigmas=(0.9, 0.9, 0.9), seed=3), stg),
        "v2_appended": (v2, inputs(v2, appended=4, clean=3, seed=4), None),
        "video_only": (v1, (inputs(v1, seed=5)[0], None), None),
    }
    # the video->audio partials riding in the next block's exchange (``sequence_riders``), also where
    # a block cannot carry them: its video self-attention skipped for the whole batch (STG: no
    # exchange; gathered on their own), no video->audio attention at all (isolated modalities)
    riders = {
        "riders_perturbations": (v1, inputs(v1, sigmas=(0.9, 0.9, 0.9), seed=3), stg),
        "riders_v2_appended": (v2, inputs(v2, appended=4, clean=3, seed=4), None),
        "riders_stg_whole_batch": (v1, inputs(v1, seed=10), [Perturbation.stg((1,))]),
        "riders_isolated_whole_batch": (v1, inputs(v1, seed=11), [Perturbation.isolate_modalities()]),
    }
    for name, (m, (video, audio), perturbations) in {**cases, **riders}.items():
        ref = m(video, audio, perturbations)
        m.sequence_riders = name in riders  # the other cases without (the default "auto" would take them here)
        try:
            ours = m(video, audio, perturbations, sequence=world.sequence)
        finally:
            m.sequence_riders = False  # the cases below count the collectives of a block without riders
        out[f"{prefix}sp_{name}"] = _error(ours, ref)
    # the self-attention exchange "auto" does not take on this world (4 ranks: "keys", 2: "heads"),
    # with a strengths mask (whose rows the "keys" exchange cuts) and padding
    auto = resolve_exchange("auto", world.sequence.size)
    video, audio = inputs(v1, grid=(2, 3, 5), appended=7, mask=True, seed=9)
    v1.sequence_exchange = "heads" if auto == "keys" else "keys"
    try:
        ours = v1(video, audio, sequence=world.sequence)
    finally:
        v1.sequence_exchange = "auto"
    out[f"{prefix}sp_other_exchange"] = _error(ours, v1(video, audio))
    # "push" (off CUDA: gathered at once by gloo through the same custom ops and buffers), with the
    # strengths mask, padding and STG; riders on (they ride on 2 ranks; 4 ranks gather them apart)
    video, audio = inputs(v1, grid=(2, 3, 5), mask=True, sigmas=(0.9, 0.9, 0.9), seed=12)
    v1.sequence_exchange, v1.sequence_riders = "push", True
    try:
        with torch.inference_mode():  # the buffers made here (as the pipelines run), written below outside it
            v1(video, audio, stg, sequence=world.sequence)
        ours = v1(video, audio, stg, sequence=world.sequence)
    finally:
        v1.sequence_exchange, v1.sequence_riders = "auto", False
    out[f"{prefix}sp_push"] = _error(ours, v1(video, audio, stg))
    video, audio = inputs(v1, appended=5, seed=6)
    cache = v1.cache_text(video, audio)
    out[f"{prefix}sp_text_cache"] = _error(v1(video, audio, None, cache, sequence=world.sequence), v1(video, audio))
    # a pass too small for every rank: fewer shards (4 ranks: 2 replicas of 2; 2 ranks: each alone)
    video, audio = inputs(v1, grid=(2, 2, 4), seed=7)  # 16 tokens
    group = world.sequence_for(video.latent.shape[1], 8)
    out[f"{prefix}sp_fewer_shards"] = _error(v1(video, audio, sequence=group), v1(video, audio))
    out[f"{prefix}sp_shards"] = [world.sequence_for(video.latent.shape[1], least).size for least in (4, 8, 9)]
    # compiled blocks, with the custom-op collectives (kept as calls by torch.compile, which CUDA
    # graph recordings cut at), and with PyTorch's functional collectives traced in
    video, audio = inputs(v1, grid=(2, 3, 5), appended=3, seed=8)
    ref = v1(video, audio)
    calls = []  # the custom ops' collectives
    distributed.between_pieces = lambda step, *uses: (calls.append(1), step())
    layers = len(v1.transformer_blocks)
    try:
        # a block's exchanges (2 "heads", 1 "keys") and its video->audio partials' gather, the velocity gather
        error = _error(v1(video, audio, sequence=world.sequence), ref)
        expected = (3 if auto == "heads" else 2) * layers + 1
        out[f"{prefix}sp_collectives"] = error if len(calls) == expected else f"{len(calls)} != {expected} calls"
        # with riders, compiled: the partials ride in the next block's exchange (the last block's gathered after it)
        v1.sequence_riders = True
        compile_blocks(v1)
        calls.clear()
        error = _error(v1(video, audio, sequence=world.sequence), ref)
        expected = (2 if auto == "heads" else 1) * layers + 2
        out[f"{prefix}sp_compiled"] = error if len(calls) == expected else f"{len(calls)} != {expected} calls"
        # "push", compiled: its exchanges are no collectives between graph pieces (riders: as above)
        v1.sequence_exchange = "push"
        calls.clear()
        error = _error(v1(video, audio, sequence=world.sequence), ref)
        expected = 2 if world.sequence.size == 2 else layers + 1
        out[f"{prefix}sp_compiled_push"] = error if len(calls) == expected else f"{len(calls)} != {expected} calls"
        v1.sequence_exchange = "auto"
        calls.clear()
        with distributed.functional_collectives():
            error = _error(v1(video, audio, sequence=world.sequence), ref)
        out[f"{prefix}sp_compiled_functional"] = error if not calls else f"{len(calls)} custom-op calls"
    finally:
        distributed.between_pieces = between_pieces
        v1.sequence_riders, v1.sequence_exchange = False, "auto"
        uncompile_blocks(v1)
    return out


def _states(m, seed: int):
    video, audio = inputs(m, grid=(2, 3, 5), appended=5, mask=True, seed=seed)
    mask = (video.timesteps[:1] > 0).float()
    return (TokenState(video.latent[:1], video.latent[:1].clone(), mask, video.positions[:1], video.attention_mask[:1]),
            TokenState(audio.latent[:1], audio.latent[:1].clone(), torch.ones(1, audio.latent.shape[1], 1),
                       audio.positions[:1]), video.context[:1], audio.context[:1])


def guidance_cases(world: World, prefix: str) -> dict:
    """Guided steps (4 passes, 3 passes, skipped steps) and simple steps, split over ``world``."""
    out = {}
    m = model("v1")
    vs, as_, vctx, actx = _states(m, seed=7)
    gen = torch.Generator().manual_seed(8)
    neg_v, neg_a = torch.randn(vctx.shape, generator=gen), torch.randn(actx.shape, generator=gen)
    full = GuiderParams(3.0, 1.0, (1,), 0.7, 3.0)
    variants = {"four_passes": (full, full), "three_passes": (dataclasses.replace(full, modality_scale=1.0),) * 2,
                "skip_step": (dataclasses.replace(full, skip_step=1), full)}
    for name, (pv, pa) in variants.items():
        results = []
        for w in (None, world):
            d = GuidedDenoiser(m, (vctx, neg_v), (actx, neg_a), GuidanceSchedule.constant(pv),
                               GuidanceSchedule.constant(pa), world=w)
            results.append([d(vs, as_, torch.tensor(s), i) for i, s in enumerate((0.9, 0.6, 0.3))])
        out[f"{prefix}cfg_{name}"] = max(_error(o, r) for o, r in zip(results[1], results[0]))
    simple = [SimpleDenoiser(m, vctx, actx, world=w)(vs, as_, torch.tensor(0.5), 0) for w in (None, world)]
    out[f"{prefix}simple"] = _error(simple[1], simple[0])
    return out


def decode_case(world: World, prefix: str) -> dict:
    """Tiled video decoding split over the ranks (a noise-drawing LTX-2 decoder): frames on rank 0 only."""
    from fastltx.checkpoint.factory import random_state
    from fastltx.models.video_vae import SpatialTiling, TemporalTiling, Tiling, VideoDecoder, decode_video
    from fastltx.models.video_vae.layouts import vae_config
    from fastltx.models.video_vae.parallel import decode_video_split

    with torch.device("meta"):
        decoder = VideoDecoder(vae_config("v1").decoder)
    decoder.load_state_dict(random_state(decoder, 5, "cpu", torch.float32), assign=True)
    latent = torch.randn(1, decoder.cfg.latent_channels, 3, 3, 4, generator=torch.Generator().manual_seed(9))
    tiling = Tiling(SpatialTiling(64, 32), TemporalTiling(16, 8))
    ref = torch.cat(list(decode_video(decoder, latent, torch.Generator().manual_seed(1), tiling)))
    ours = list(decode_video_split(world, decoder, latent, torch.Generator().manual_seed(1), tiling))
    if not world.main:
        return {f"{prefix}decode_elsewhere_empty": float(len(ours))}
    ours = torch.cat(ours)
    return {f"{prefix}decode_tiled": float((ours.int() - ref.int()).abs().max()) if ours.shape == ref.shape
            else f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}"}


def error_case(world: World, prefix: str) -> dict:
    """Bad input on one rank only: every rank raises that rank's error."""
    def check():
        if world.rank == world.size - 1:
            raise InputError(f"bad input seen by rank {world.rank}")
    try:
        world.agree(check)
    except InputError as e:
        return {f"{prefix}same_error": str(e)}
    return {f"{prefix}same_error": "no error raised"}


def from_main_case(world: World, prefix: str) -> dict:
    """``World.from_main``: rank 0's result (a dataclass of tensors and None) on every rank, the
    function not called elsewhere; rank 0's failure raised on every rank."""
    from fastltx.models.text_encoder import TextEncoding

    def encode():
        if not world.main:
            raise RuntimeError(f"called on rank {world.rank}")
        return TextEncoding(torch.arange(24.0).view(1, 4, 6).transpose(1, 2), None)  # not contiguous
    out = world.from_main(encode)
    shared = float((out.video - torch.arange(24.0).view(1, 4, 6).transpose(1, 2)).abs().max())

    def fail():
        raise InputError("the text path failed on rank 0")
    try:
        world.from_main(fail)
        error = "no error raised"
    except InputError as e:
        error = str(e)
    return {f"{prefix}from_main": shared if out.audio is None and out.video.shape == (1, 6, 4) else f"got {out}",
            f"{prefix}from_main_error": error}


def three_ranks_case(world: World, prefix: str) -> dict:
    """Over 3 ranks, which do not divide the video heads (with padding and a strengths mask): "auto"
    gathers the keys and values (4 heads); a named "heads" pads the heads with phantom ones: 4 heads
    to 6, 2 a rank (the last rank's both phantoms), and 5 heads to 6 in a batch of 2 (the last rank
    one real head and one phantom), without riders and with them (the video->audio partials in the
    output's exchange). Each equals the single process's result."""
    from fastltx.models.transformer import sharding
    out = {}
    for heads, sigmas in ((4, (0.8,)), (5, (0.8, 0.5))):
        m = model("v1", heads)
        video, audio = inputs(m, grid=(2, 3, 5), appended=7, mask=True, sigmas=sigmas, seed=12)
        ref = m(video, audio)
        if heads == 4:
            out[f"{prefix}exchange"] = sharding.plan(video, world.sequence, heads).exchange
            out[f"{prefix}sp_auto"] = _error(m(video, audio, sequence=world.sequence), ref)
        m.sequence_exchange = "heads"
        out[f"{prefix}heads{heads}_plan"] = sharding.plan(video, world.sequence, heads, "heads").exchange
        for riders in (False, True):  # ("auto" would take them on shards this small)
            m.sequence_riders = riders
            name = f"{prefix}sp_heads{heads}" + ("_riders" if riders else "")
            out[name] = _error(m(video, audio, sequence=world.sequence), ref)
    return out


def push_probe_case(world: World, prefix: str) -> dict:
    """``push_usable`` over the world's sequence group: True on every rank where every rank made its
    buffer; where the last rank cannot (as symmetric memory fails in some containers), False on
    every rank and a warning on the first and the failing one. (Off CUDA the buffers are plain
    tensors: the agreement is what runs.)"""
    import warnings

    from fastltx.runtime import push
    group = world.sequence
    name = group.group.group_name
    saved = push._buffers.pop(name, None), push._usable.pop(name, None)
    make = push._new_buffer

    def fail(*args):
        raise push._unmade(RuntimeError("pidfd_getfd: Operation not permitted"))
    out = {}
    try:
        made = push.push_usable(group, "cpu")
        out[f"{prefix}push_probe_made"] = [made, len(push._buffers[name]), push._buffers[name][0].whole.numel()]
        out[f"{prefix}push_probe_again"] = push.push_usable(group, "cpu")  # answered once: no collective
        push._buffers.pop(name), push._usable.pop(name)
        if world.rank == world.size - 1:
            push._new_buffer = fail
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[f"{prefix}push_probe_failed"] = push.push_usable(group, "cpu")
        out[f"{prefix}push_probe_warning"] = [str(w.message) for w in caught if w.category is RuntimeWarning]
        # the check before every rendezvous: an allocation failed on the last rank, then uneven counts
        last = world.rank == world.size - 1
        try:
            push._check_even(name, torch.device("cpu"), RuntimeError("no handles") if last else None)
            out[f"{prefix}push_check_failed"] = "no error raised"
        except push.SymmetricMemoryError as e:
            out[f"{prefix}push_check_failed"] = e.why
        try:  # the last rank out of memory: its error there, a RuntimeError elsewhere; no "keys" for it
            push._check_even(name, torch.device("cpu"), torch.OutOfMemoryError("CUDA out of memory") if last else None)
            out[f"{prefix}push_check_oom"] = "no error raised"
        except push.SymmetricMemoryError as e:
            out[f"{prefix}push_check_oom"] = f"SymmetricMemoryError: {e.why}"
        except RuntimeError as e:
            out[f"{prefix}push_check_oom"] = f"{type(e).__name__}: {e}"
        count = push._made
        push._made += last
        try:
            push._check_even(name, torch.device("cpu"))
            out[f"{prefix}push_check_uneven"] = "no error raised"
        except RuntimeError as e:
            out[f"{prefix}push_check_uneven"] = str(e)[:60]
        finally:
            push._made = count
    finally:
        push._new_buffer = make
        push._buffers.pop(name, None), push._usable.pop(name, None)
        if saved[0] is not None:
            push._buffers[name] = saved[0]
        if saved[1] is not None:
            push._usable[name] = saved[1]
    return out


def pipeline_case(world: World, prefix: str, demo: str) -> dict:
    """The two-stage pipeline (guided stage 1, stage 2, upsampling, tiled decoding) through
    ``load_pipeline(world=...)``: rank 0 gets the frames of one process, the other ranks None."""
    from fastltx.models.video_vae import SpatialTiling, Tiling
    from fastltx.pipelines import load_pipeline
    from fastltx.pipelines.demo import demo_files

    from fastltx.models.transformer import sharding
    # the tiny passes split over the ranks too (the real thresholds keep them whole)
    sharding.MIN_TOKENS_PER_RANK = sharding.MIN_TOKENS_PER_RANK_EAGER = 1
    sharding.MIN_TOKENS_TO_SPLIT = 0
    files = demo_files(demo)
    call = dict(prompt="a fox", seed=3, height=128, width=128, num_frames=9, steps=2, progress=False,
                tiling=Tiling(SpatialTiling(64, 32)))
    load = lambda w: load_pipeline("two-stage", files.checkpoint, files.text_encoder, files.upsampler,  # noqa: E731
                                   files.stage2_loras[0], device="cpu", dtype=torch.float32, world=w)
    pipe = load(world)
    ours = pipe(**call)
    if not world.main:  # the prompts are encoded on rank 0 only: no text encoder loaded here
        return {f"{prefix}pipeline_elsewhere_none": 0.0 if ours is None else "a result off rank 0",
                f"{prefix}pipeline_elsewhere_text_encoder": float("text_encoder" in pipe.components.__dict__)}
    ref = load(None)(**call)
    return {f"{prefix}pipeline_frames": float((ours.video.int() - ref.video.int()).abs().max()),
            f"{prefix}pipeline_audio": float((ours.audio - ref.audio).abs().max())}


def run_all(rank: int, size: int, port: int, folder: str, demo: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    results = {}
    try:
        world = init_distributed(device="cpu")
        # pairs of ranks as worlds of their own (every process takes part in making both)
        pairs = [world_from_ranks([r, r + 1], torch.device("cpu")) for r in range(0, size, 2)]
        pair = pairs[rank // 2]
        trio = world_from_ranks([0, 1, 2], torch.device("cpu"))  # (None on rank 3)
        runs = [(w, prefix, cases) for w, prefix in ((world, f"w{size}_"), (pair, "w2_"))
                for cases in (sequence_cases, guidance_cases, decode_case, error_case, from_main_case,
                              push_probe_case)]
        runs += [(trio, "w3_", three_ranks_case)] if trio is not None else []
        for w, prefix, cases in runs + [(pair, "w2_", lambda w, p: pipeline_case(w, p, demo))]:
            try:
                results.update(cases(w, prefix))
            except Exception:  # noqa: BLE001  (reported by the test, which names the case)
                results[f"{prefix}{getattr(cases, '__name__', 'case')}"] = traceback.format_exc()
    except Exception:  # noqa: BLE001
        results["setup"] = traceback.format_exc()
    Path(folder, f"rank{rank}.json").write_text(json.dumps(results))
    torch.distributed.destroy_process_group()
