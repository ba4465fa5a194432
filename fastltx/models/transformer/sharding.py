"""Sequence parallelism for the transformer: the video tokens of one forward split across ranks.

Every rank receives the full inputs (the denoising loop's state is replicated) and keeps its part of
the video tokens: latents, per-token timesteps and positions (hence its AdaLN rows and RoPE tables)
are cut the same way, appended conditioning tokens included. Audio and text stay whole on every
rank (they are short), so the audio-video cross-attentions need no gathered video. Counts that do
not divide evenly are padded at the end; padding tokens are masked as keys in the self-attention
and left out of the video->audio attention. Each rank's velocities are all-gathered at the end.
"""

from dataclasses import replace

import torch

from fastltx.layers.sequence_parallel import SequenceShard, resolve_exchange
from fastltx.models.transformer.inputs import ModalityInput
from fastltx.runtime.distributed import Group


# Fewest video tokens a rank keeps of a pass: below it, the fixed cost of the collectives (and, eager,
# of the kernel launches) outweighs the work split. 4 x H200, distilled stage 1 (one pass), ms per
# step with 4 / 2 / 1 GPU(s), 3,840 tokens (960 a rank on 4): compiled, heads sent in one piece, 86
# / 124 / 212 (2026-11-26, fourth session) and 106 / 133 / 210 (fifth session, another machine);
# eager, heads then in 4 pieces, 337 / 222 / 254. Not measured: eager in one piece.
MIN_TOKENS_PER_RANK = 512  # compiled blocks
MIN_TOKENS_PER_RANK_EAGER = 1024  # eager blocks: each rank still launches every kernel
# Fewest video tokens of a pass that splits at all. A split step costs ~50-60 ms more than its share
# of the work, whatever the token count (the collectives' waits: the step is launch-bound), which a
# small pass does not win back: 512x768's stage 1, 1,536 tokens, compiled, took 109 ms a step on 2
# GPUs (768 a rank) against 85 on one (4 x H200, fifth session); 3,840 tokens gain (above).
MIN_TOKENS_TO_SPLIT = 2048
# The same two thresholds for compiled blocks through CUDA graphs (``graph_blocks``): the host no
# longer launches every kernel, only the collectives, and small passes gain from the split. 4 x H200,
# 1,536 tokens (512x768's stage 1), ms a step on 1 / 2 / 4 GPUs: plain 83.9 / 172.7 / 145.5, graphed
# 84.1 / 62.5 / 52.7 (seventh session). Smaller passes and shards were not measured. Only passes
# whose batch x tokens fit ``GRAPH_MAX_TOKENS`` (model.py) take them: those run graphed however split.
MIN_TOKENS_PER_RANK_GRAPHED = 384
MIN_TOKENS_TO_SPLIT_GRAPHED = 1536


def sequence_group(world, video: ModalityInput | None, compiled: bool, graphed: bool = False) -> Group:
    """The group a one-pass forward splits its video tokens over (``World.sequence_for``), by the
    thresholds of eager, compiled, or compiled and graphed blocks; a pass under the split threshold
    runs whole on every rank."""
    if video is None:
        return world.sequence
    tokens = video.latent.shape[1]
    from fastltx.models.transformer.model import GRAPH_MAX_TOKENS  # (model.py imports this module)
    if compiled and graphed and video.latent.shape[0] * tokens <= GRAPH_MAX_TOKENS:
        minimum, split = MIN_TOKENS_PER_RANK_GRAPHED, MIN_TOKENS_TO_SPLIT_GRAPHED
    else:
        minimum, split = (MIN_TOKENS_PER_RANK if compiled else MIN_TOKENS_PER_RANK_EAGER), MIN_TOKENS_TO_SPLIT
    return world.sequence_for(tokens, minimum if tokens >= split else max(tokens, 1))


# Most of a pass's video tokens a rank keeps (batch x tokens a rank) for which ``sequence_riders``
# "auto" lets the video->audio partials ride in the next block's exchange: one collective fewer a
# block pays where a step is bound by the collectives' fixed cost, while on larger shards something
# costs more than that (likely the longer exchange buffer: the attention output copied in beside the
# rider; not profiled). 4 x H200, distilled 768x1280, compiled and graphed, riders against none paired
# within a launch (docs/benchmarks-multi-gpu-2.md, fifteenth session): stage-1 steps on 4 GPUs (960
# a rank) 1.0-1.5 ms faster in six of six pairs; on 2 GPUs (1,920 a rank) 0.6 ms faster in the one
# pair timed step by step; stage 2 on 4 GPUs (3,840 a rank) 1-8 ms slower a stage (3 steps) in
# seven of eight pairs, on 2 GPUs (7,680 a rank) even.
RIDERS_MAX_TOKENS_PER_RANK = 2048


def plan(video: ModalityInput, group: Group, heads: int, exchange: str = "auto",
         riders: bool | str = False) -> SequenceShard:
    """This rank's part of the video tokens. ``riders``: True, False, or "auto" (for shards of at
    most ``RIDERS_MAX_TOKENS_PER_RANK`` batch x tokens)."""
    batch, tokens = video.latent.shape[:2]
    if riders == "auto":
        riders = batch * -(-tokens // group.size) <= RIDERS_MAX_TOKENS_PER_RANK
    elif not isinstance(riders, bool):
        raise ValueError(f"sequence_riders: True, False or 'auto', got {riders!r}")
    device = video.latent.device
    named = exchange_for(exchange, group.size, heads, device)
    # ("auto" that means "push" stays "auto": SequenceShard.plan asks push_usable, and may take "keys")
    return SequenceShard.plan(tokens, group, "auto" if exchange == "auto" and named == "push" else named, riders,
                              device)


def exchange_for(exchange: str, ranks: int, heads: int, device: torch.device | str | None = None) -> str:
    """The exchange ``plan`` takes for ``exchange`` over ``ranks`` ranks of a model with ``heads``
    video heads, short of ``push_usable``'s answer (a collective; benchmarks and tests name it):
    ``resolve_exchange``'s, except that "auto" gathers the keys ("keys", for any rank count) where
    the ranks do not divide the heads (3 GPUs, say), where "heads" would pad them with phantom heads:
    3 GPUs of a 4 x H200 machine, distilled 768x1280, compiled and graphed, transformer steps over 1
    GPU in one launch, "keys" 2.57x, "heads" 2.54x (docs/benchmarks-multi-gpu-3.md, twenty-fifth
    session; 6 GPUs not measured)."""
    named = resolve_exchange(exchange, ranks, device)
    return "keys" if exchange == "auto" and named == "heads" and heads % ranks else named


def local_video(m: ModalityInput, shard: SequenceShard) -> ModalityInput:
    """This rank's tokens of the video input (the self-attention mask is handled by ``self_strengths``)."""
    tokens = m.latent.shape[1]
    timesteps = torch.as_tensor(m.timesteps)
    if timesteps.ndim >= 2 and timesteps.shape[1] == tokens:
        timesteps = shard.take(timesteps, 1)
    levels = m.timestep_levels
    if levels is not None and levels[1].shape[1] == tokens:
        levels = (levels[0], shard.take(levels[1], 1))
    return replace(m, latent=shard.take(m.latent, 1), timesteps=timesteps, positions=shard.take(m.positions, 2),
                   attention_mask=None, timestep_levels=levels)


def self_strengths(strength: torch.Tensor | None, shard: SequenceShard) -> torch.Tensor | None:
    """The (B, T, T) attention strengths over the padded sequence: padding columns 0 (never
    attended to), padding rows 1 on the real tokens (their outputs are dropped)."""
    pad = shard.padded - shard.tokens
    if strength is None or not pad:
        return strength
    t = shard.tokens
    full = strength.new_zeros(strength.shape[0], shard.padded, shard.padded)
    full[:, :t, :t] = strength
    full[:, t:, :t] = 1
    return full


def key_padding_bias(shard: SequenceShard, dtype: torch.dtype, device) -> torch.Tensor | None:
    """Additive (1, 1, 1, padded) bias hiding the padding keys; None when nothing is padded."""
    if shard.padded == shard.tokens:
        return None
    bias = torch.zeros(1, 1, 1, shard.padded, dtype=dtype, device=device)
    bias[..., shard.tokens:] = torch.finfo(dtype).min
    return bias


class SequenceParallel:
    """A transformer bound to a World: each call splits the video tokens over the world's ranks
    (``sequence_group``: all of them unless the pass is small), unless the call names its own
    ``sequence`` group (the denoisers do). Everything else (cfg, cache_text, blocks, ...) is the
    model's own."""

    def __init__(self, model, world):
        self.model, self.world = model, world

    def __call__(self, *args, sequence: Group | None = None, **kwargs):
        if sequence is None:
            from fastltx.runtime.compile import blocks_compiled
            sequence = sequence_group(self.world, args[0] if args else kwargs.get("video"), blocks_compiled(self.model),
                                      getattr(self.model, "graphed", False))
        return self.model(*args, sequence=sequence, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.model, name)
