"""One audio-video transformer block (``transformer_blocks.N``) and the per-stream state it reads.

Order inside a block (the reference's): video self-attention, video text cross-attention, audio
self-attention, audio text cross-attention, audio->video and video->audio cross-attention (both
from the same pre-normalised streams), video feed-forward, audio feed-forward. Every residual is
AdaLN-modulated and gated; the modulation rows are the block's table plus the per-token timestep
projection.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from fastltx.layers.attention import Attention
from fastltx.layers.mlp import FeedForward
from fastltx.layers.norm import rms_norm
from fastltx.layers.rope import Rope
from fastltx.layers.sequence_parallel import SequenceShard, gather_partials
from fastltx.models.transformer.config import StreamGeometry, TransformerConfig


@dataclass
class Stream:
    """A modality's activations and everything the blocks need about it for one forward."""

    x: torch.Tensor  # (B, T, D)
    context: torch.Tensor | None  # (B, S, D) text at the stream width; None with cached text keys
    context_mask: torch.Tensor | None  # additive (B, 1, 1, S) or None
    ada: torch.Tensor  # (B, T or 1, rows, D) per-token AdaLN projections
    embedded: torch.Tensor  # (B, T or 1, D) pre-SiLU timestep embedding (output head)
    rope: Rope
    self_mask: torch.Tensor | None  # additive (B, 1, T, T) or None
    enabled: bool
    prompt_ada: torch.Tensor | None = None  # (B, 1, 2, D), LTX-2.3 prompt AdaLN
    cross_rope: Rope | None = None  # time-only RoPE for the AV cross-attentions
    cross_ada: torch.Tensor | None = None  # (B, 1, 4, D) scale/shift from the other stream's sigma
    cross_gate: torch.Tensor | None = None  # (B, 1, 1, D)
    shard: SequenceShard | None = None  # x holds this rank's part of the tokens (sequence parallelism)

    @property
    def active(self) -> bool:
        return self.enabled and self.x.numel() > 0


@dataclass(frozen=True)
class BlockSkips:
    """Per-block perturbation plan for one kind of attention: nobody, everybody, or a (B,1,1) keep mask."""

    all: bool = False
    keep: torch.Tensor | None = None


NO_SKIP = BlockSkips()


class PendingAudio(NamedTuple):
    """A block's audio work left for the next block (see ``AVBlock.forward``): this rank's
    video->audio partial, that cross-attention's query input, and its per-sample keep mask."""

    partial: torch.Tensor  # (B, heads, Tq, d + 1) float32
    query: torch.Tensor  # (B, Tq, D)
    keep: torch.Tensor | None


def modulation(table: torch.Tensor, ada: torch.Tensor, rows: slice) -> tuple[torch.Tensor, ...]:
    """(table[rows] + ada[:, :, rows]) unbound into per-row tensors of shape (B, T, D)."""
    return (table[rows][None, None].to(ada.dtype) + ada[:, :, rows]).unbind(dim=2)


class AVBlock(nn.Module):
    def __init__(self, index: int, cfg: TransformerConfig):
        super().__init__()
        self.index, self.eps = index, cfg.norm_eps
        self.cross_adaln = cfg.cross_attention_adaln
        v, a = cfg.video, cfg.audio
        gated = cfg.gated_attention

        def self_and_text(g: StreamGeometry):
            return (Attention(g.dim, g.heads, g.head_dim, eps=cfg.norm_eps, gated=gated),
                    Attention(g.dim, g.heads, g.head_dim, g.context_dim, cfg.norm_eps, gated),
                    FeedForward(g.dim), nn.Parameter(torch.empty(cfg.ada_rows, g.dim)))

        if v is not None:
            self.attn1, self.attn2, self.ff, self.scale_shift_table = self_and_text(v)
            if self.cross_adaln:
                self.prompt_scale_shift_table = nn.Parameter(torch.empty(2, v.dim))
        if a is not None:
            self.audio_attn1, self.audio_attn2, self.audio_ff, self.audio_scale_shift_table = self_and_text(a)
            if self.cross_adaln:
                self.audio_prompt_scale_shift_table = nn.Parameter(torch.empty(2, a.dim))
        if v is not None and a is not None:
            # Both directions use the audio head geometry.
            self.audio_to_video_attn = Attention(v.dim, a.heads, a.head_dim, a.dim, cfg.norm_eps, gated)
            self.video_to_audio_attn = Attention(a.dim, a.heads, a.head_dim, v.dim, cfg.norm_eps, gated)
            self.scale_shift_table_a2v_ca_audio = nn.Parameter(torch.empty(5, a.dim))
            self.scale_shift_table_a2v_ca_video = nn.Parameter(torch.empty(5, v.dim))

    def _self_and_text(self, s: Stream, attn1: Attention, attn2: Attention, table: torch.Tensor,
                       prompt_table: torch.Tensor | None, skip: BlockSkips, text_kv,
                       rider: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stream after its self- and text attention, and the riders the exchange brought (or None)."""
        shift, scale, gate = modulation(table, s.ada, slice(0, 3))
        h = rms_norm(s.x, eps=self.eps) * (1 + scale) + shift
        out = attn1(h, mask=s.self_mask, rope=s.rope, keep=skip.keep, passthrough=skip.all, shard=s.shard, rider=rider)
        riders = None
        if rider is not None:
            out, riders = out
        x = s.x + out * gate
        if not self.cross_adaln:
            return x + attn2(rms_norm(x, eps=self.eps), s.context, s.context_mask, kv=text_kv), riders
        shift_q, scale_q, gate_q = modulation(table, s.ada, slice(6, 9))
        shift_kv, scale_kv = modulation(prompt_table, s.prompt_ada, slice(0, 2))
        q_in = rms_norm(x, eps=self.eps) * (1 + scale_q) + shift_q
        kv_in = s.context * (1 + scale_kv) + shift_kv
        return x + attn2(q_in, kv_in, s.context_mask) * gate_q, riders

    def _feed_forward(self, s: Stream, ff: FeedForward, table: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = modulation(table, s.ada, slice(3, 6))
        return s.x + ff(rms_norm(s.x, eps=self.eps) * (1 + scale) + shift) * gate

    @staticmethod
    def _cross_modulation(table: torch.Tensor, s: Stream, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        # Rows are (scale, shift) here, unlike the (shift, scale) order of the self-attention rows.
        scale, shift = modulation(table[:4], s.cross_ada, rows)
        return scale, shift

    def text_keys_values(self, video_context: torch.Tensor | None, audio_context: torch.Tensor | None):
        """This block's text keys/values for each stream (LTX-2 only: in LTX-2.3 they depend on sigma)."""
        return (self.attn2.keys_values(video_context) if video_context is not None else None,
                self.audio_attn2.keys_values(audio_context) if audio_context is not None else None)

    def forward(self, video: Stream | None, audio: Stream | None, skips: dict, text_kv=(None, None),
                prev: "AVBlock | None" = None, pending: PendingAudio | None = None) -> PendingAudio | None:
        """Update ``video.x`` and ``audio.x`` in place (the Stream objects, not the tensors).

        ``text_kv``: this block's cached text (keys, values) per stream, or None to project them here.
        With the video split over ranks and riders on (``SequenceShard.carry``: the transformer's
        ``sequence_riders`` and an exchange that can carry them), the video->audio partials are not
        gathered here: the audio's rest of the block (that cross-attention's output and the audio
        feed-forward) is returned as ``PendingAudio`` and done by the next block (``prev``: this
        block, ``pending``: what it returned) once its video self-attention has brought every rank's
        partials; after the last block, ``finish_pending``. Otherwise the result is None.
        """
        run_v = video is not None and video.active
        run_a = audio is not None and audio.active
        parts = None
        if run_v:
            rider = None
            skip = skips.get("video_self", NO_SKIP)
            if pending is not None and video.shard is not None and not skip.all:
                rider = pending.partial
            video.x, parts = self._self_and_text(video, self.attn1, self.attn2, self.scale_shift_table,
                                                 getattr(self, "prompt_scale_shift_table", None), skip,
                                                 text_kv[0], rider)
        if pending is not None:
            AVBlock.finish_pending(prev, audio, pending, parts, video.shard)  # (the method, never a compiled copy)
        if run_a:
            audio.x, _ = self._self_and_text(audio, self.audio_attn1, self.audio_attn2, self.audio_scale_shift_table,
                                             getattr(self, "audio_prompt_scale_shift_table", None),
                                             skips.get("audio_self", NO_SKIP), text_kv[1])
        run_a2v = run_v and audio is not None and audio.x.numel() > 0
        run_v2a = run_a and video is not None and video.x.numel() > 0
        deferred = None
        if run_a2v or run_v2a:
            vn, an = rms_norm(video.x, eps=self.eps), rms_norm(audio.x, eps=self.eps)
            vt, at = self.scale_shift_table_a2v_ca_video, self.scale_shift_table_a2v_ca_audio
            a2v, v2a = skips.get("a2v", NO_SKIP), skips.get("v2a", NO_SKIP)
            if run_a2v and not a2v.all:
                scale_v, shift_v = self._cross_modulation(vt, video, slice(0, 2))
                scale_a, shift_a = self._cross_modulation(at, audio, slice(0, 2))
                gate = (vt[4:][None, None].to(video.cross_gate.dtype) + video.cross_gate)[:, :, 0]
                out = self.audio_to_video_attn(vn * (1 + scale_v) + shift_v, an * (1 + scale_a) + shift_a,
                                               rope=video.cross_rope, k_rope=audio.cross_rope) * gate
                video.x = video.x + (out if a2v.keep is None else out * a2v.keep)
            if run_v2a and not v2a.all:
                scale_a, shift_a = self._cross_modulation(at, audio, slice(2, 4))
                scale_v, shift_v = self._cross_modulation(vt, video, slice(2, 4))
                query, keys = an * (1 + scale_a) + shift_a, vn * (1 + scale_v) + shift_v
                if video.shard is not None and video.shard.carry:
                    partial = self.video_to_audio_attn.partial(query, keys, video.shard, rope=audio.cross_rope,
                                                               k_rope=video.cross_rope)
                    deferred = PendingAudio(partial, query, v2a.keep)
                else:
                    out = self.video_to_audio_attn(query, keys, rope=audio.cross_rope, k_rope=video.cross_rope,
                                                   shard=video.shard)
                    audio.x = audio.x + self._v2a_residual(audio, out, v2a.keep)
        if run_v:
            video.x = self._feed_forward(video, self.ff, self.scale_shift_table)
        if run_a and deferred is None:
            audio.x = self._feed_forward(audio, self.audio_ff, self.audio_scale_shift_table)
        return deferred

    def _v2a_residual(self, audio: Stream, out: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        at = self.scale_shift_table_a2v_ca_audio
        out = out * (at[4:][None, None].to(audio.cross_gate.dtype) + audio.cross_gate)[:, :, 0]
        return out if keep is None else out * keep

    def finish_pending(self, audio: Stream, pending: PendingAudio, parts: torch.Tensor | None,
                       shard: SequenceShard) -> None:
        """This block's deferred audio work (see ``forward``): the video->audio output from every
        rank's partials (``parts``, or None: gathered here over ``shard``) and the audio feed-forward."""
        if parts is None:
            parts = gather_partials(pending.partial, shard)
        out = self.video_to_audio_attn.finish(pending.query, parts)
        audio.x = audio.x + self._v2a_residual(audio, out, pending.keep)
        audio.x = self._feed_forward(audio, self.audio_ff, self.audio_scale_shift_table)
