"""The LTX-2 audio-video diffusion transformer (video-only, audio-only or both; V1 and V2 numerics).

``LTXTransformer(cfg)(video, audio, perturbations)`` returns the denoised (x0) predictions: the
network predicts a velocity v and x0 = x - v * t per token, computed in float32.
"""

import weakref
from collections.abc import Sequence

import torch
from torch import nn

from fastltx.layers.attention import check_backend
from fastltx.layers.embeddings import AdaLNSingle, CaptionProjection
from fastltx.layers.norm import layer_norm
from fastltx.layers.rope import rope_tables
from fastltx.layers.sequence_parallel import SequenceShard
from fastltx.models.transformer import sharding
from fastltx.models.transformer.block import AVBlock, BlockSkips, Stream
from fastltx.models.transformer.config import StreamGeometry, TransformerConfig
from fastltx.models.transformer.inputs import ModalityInput, Perturbation, Skip, distinct_levels
from fastltx.runtime.cuda_graph import static
from fastltx.runtime.distributed import Group

_SKIP_NAMES = {Skip.VIDEO_SELF_ATTN: "video_self", Skip.AUDIO_SELF_ATTN: "audio_self",
               Skip.A2V_CROSS_ATTN: "a2v", Skip.V2A_CROSS_ATTN: "v2a"}


def self_attention_bias(strength: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[0, 1] strengths (B, T, T) -> additive log-space bias (B, 1, T, T); 0 -> dtype's minimum."""
    finfo = torch.finfo(dtype)
    positive = strength > 0
    logs = torch.log(strength.clamp(min=finfo.tiny)).to(dtype)
    return torch.where(positive, logs, torch.full_like(logs, finfo.min)).unsqueeze(1)


def context_bias(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Binary (B, S) text mask -> additive (B, 1, 1, S); float masks are taken as additive already."""
    if mask is None or torch.is_floating_point(mask):
        return mask
    return (mask.long() - 1).to(dtype).reshape(mask.shape[0], 1, -1, mask.shape[-1]) * torch.finfo(dtype).max


class LTXTransformer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        # how a forward split over ranks exchanges the video tokens around self-attention:
        # "heads" (Ulysses all-to-alls), "keys" (keys and values all-gathered), "push" (the same pushed
        # into the peers' memory beside the queries' projection; CUDA), "auto" ("push" on 2 CUDA ranks
        # with peer access, "keys" on 2 others, "heads" on more where they divide the video heads, else
        # "keys": sharding.exchange_for)
        self.sequence_exchange = "auto"
        # whether the video->audio partials ride in the next block's self-attention exchange instead of
        # a collective of their own (sequence_parallel.py: riders): True, False, or "auto": for small
        # shards only (sharding.RIDERS_MAX_TOKENS_PER_RANK, where the measurements are)
        self.sequence_riders = "auto"
        v, a = cfg.video, cfg.audio
        if v is not None:
            self.patchify_proj, self.adaln_single, self.scale_shift_table, self.proj_out = self._stream_io(v)
            if cfg.caption_channels is not None:
                self.caption_projection = CaptionProjection(cfg.caption_channels, v.dim)
            if cfg.cross_attention_adaln:
                self.prompt_adaln_single = AdaLNSingle(v.dim, 2)
        if a is not None:
            (self.audio_patchify_proj, self.audio_adaln_single, self.audio_scale_shift_table,
             self.audio_proj_out) = self._stream_io(a)
            if cfg.caption_channels is not None:
                self.audio_caption_projection = CaptionProjection(cfg.caption_channels, a.dim)
            if cfg.cross_attention_adaln:
                self.audio_prompt_adaln_single = AdaLNSingle(a.dim, 2)
        if v is not None and a is not None:
            self.av_ca_video_scale_shift_adaln_single = AdaLNSingle(v.dim, 4)
            self.av_ca_audio_scale_shift_adaln_single = AdaLNSingle(a.dim, 4)
            self.av_ca_a2v_gate_adaln_single = AdaLNSingle(v.dim, 1)
            self.av_ca_v2a_gate_adaln_single = AdaLNSingle(a.dim, 1)
        self.transformer_blocks = nn.ModuleList(AVBlock(i, cfg) for i in range(cfg.num_layers))

    def _stream_io(self, g: StreamGeometry):
        return (nn.Linear(g.in_channels, g.dim), AdaLNSingle(g.dim, self.cfg.ada_rows),
                nn.Parameter(torch.empty(2, g.dim)), nn.Linear(g.dim, g.out_channels))

    def set_attention_backend(self, backend: str | None) -> None:
        """SDPA backend for every attention: None/'auto' (PyTorch's choice), cudnn, flash, efficient, math."""
        backend = check_backend(backend)
        for m in self.modules():
            if hasattr(m, "backend"):
                m.backend = backend

    def fuse_projections(self) -> None:
        """One GEMM for q/k/v of every self-attention and for k/v of every cross-attention."""
        for block in self.transformer_blocks:
            for name, module in block.named_children():
                if name in ("attn1", "audio_attn1"):
                    module.fuse_projections(self_attention=True)
                elif name.endswith(("attn2", "_attn")):
                    module.fuse_projections(self_attention=False)
        self._regraph()

    def to_fp8(self, weight_only: bool = False) -> int:
        """Store the block linears (attention projections and feed-forwards) in float8_e4m3fn with
        per-channel scales and run them through scaled fp8 matmuls (``weight_only``: matmuls in the
        run dtype, see ``fp8_weight_only``); returns how many were converted."""
        from fastltx.layers.linear import to_fp8
        converted = to_fp8(self.transformer_blocks, fp8_linear, weight_only)
        self._regraph()
        return converted

    # ----------------------------------------------------------------------------- preprocessing
    def _timestep(self, adaln: AdaLNSingle, t: torch.Tensor, batch: int, dtype: torch.dtype,
                  levels: tuple[torch.Tensor, torch.Tensor] | None = None):
        """AdaLN rows (B, T or 1, rows, D) and embedded timestep (B, T or 1, D) for per-token timesteps.

        A step has only a few distinct timesteps (sigma, and 0 for conditioning tokens), so the
        timestep MLP runs once per distinct value and the result is broadcast (all tokens of each
        sample alike) or gathered, instead of running once per token. The distinct values come from
        ``levels`` (see ``ModalityInput.timestep_levels``) when given; otherwise from ``torch.unique``,
        whose result size the host must wait for.
        """
        if levels is not None:
            values, index = levels
            tokens = t.reshape(batch, -1).shape[1]
            if index.shape[0] != batch or index.shape[1] not in (1, tokens):
                raise ValueError(f"timestep_levels: index of shape {tuple(index.shape)} for {batch} x {tokens} tokens")
            values = values * self.cfg.timestep_scale_multiplier
        else:
            values, index = distinct_levels((t * self.cfg.timestep_scale_multiplier).reshape(batch, -1))
        ada, embedded = adaln(values, dtype)
        ada, embedded = ada[index], embedded[index]
        return ada.unflatten(-1, (adaln.rows, -1)), embedded

    def _context(self, m: ModalityInput, audio: bool) -> torch.Tensor:
        """The text context at the stream's width (through the LTX-2 caption projection)."""
        return self._project_context(m.context, m.latent.shape[0], audio)

    def _project_context(self, context: torch.Tensor, batch: int, audio: bool) -> torch.Tensor:
        g = self.cfg.audio if audio else self.cfg.video
        if self.cfg.caption_channels is not None:
            context = getattr(self, ("audio_" if audio else "") + "caption_projection")(context)
        return context.view(batch, -1, g.dim)

    def cache_text(self, video: ModalityInput | None, audio: ModalityInput | None, slot=None) -> list:
        """Text keys/values of every block, computed once per generation and passed to ``forward``
        as ``text_cache`` (the text does not change between steps). LTX-2 (V1) only: with LTX-2.3's
        prompt AdaLN the keys depend on sigma.

        Made outside inference mode (without autograd; unless the blocks are streamed): tensors that
        keep a version counter, which graphed steps see unchanged from the step before and do not
        copy again (an inference tensor is copied into the recording's buffers at every step: 1.2 GB
        for the 19B model's 48 blocks and 1,024 text tokens). With the blocks compiled
        (``compile_blocks``) their ``text_keys_values`` is compiled too: fewer launches at the first
        step, where the GPU waits for the host when the steps are graphed.

        ``slot`` (a name, such as "simple" for the denoiser of that name): with the blocks graphed
        (``graph_blocks``), the cache is a store this model keeps under that name while it
        is graphed (made at the slot's first call), and every later call with the slot refills it in
        place through one CUDA graph (overwriting what the earlier call returned: the same tensors
        come back). The host then launches one graph instead of every block's projections at a
        stage's first step, and the blocks' recordings read the store where it lies
        (``cuda_graph.static``) instead of copying it (1.2 GB a recording for the 19B model)."""
        if self.cfg.cross_attention_adaln:
            raise ValueError("text caching needs LTX-2 numerics: LTX-2.3 modulates the text by sigma")
        filler = self.__dict__.get("graphed_text")
        if slot is not None and filler is not None and self.graphed:
            return self._refill_text(filler, slot, video, audio)
        # (streamed blocks take no graphs and run their text projections eagerly, their weights coming
        # in through hooks; their slots may be inference tensors that the streaming writes in place:
        # they stay in the caller's mode)
        streamed = self._streamed()
        with torch.inference_mode(torch.is_inference_mode_enabled() and streamed), torch.no_grad():
            vc = self._context(video, False) if video is not None else None
            ac = self._context(audio, True) if audio is not None else None
            if streamed:
                return [AVBlock.text_keys_values(block, vc, ac) for block in self.transformer_blocks]
            return [block.text_keys_values(vc, ac) for block in self.transformer_blocks]

    def _refill_text(self, filler, slot, video: ModalityInput | None, audio: ModalityInput | None) -> list:
        """``cache_text`` into the store of ``slot``: made (and marked static) at the first call, or
        where the contexts' shapes changed, and its refill recorded then; refilled through ``filler``
        (a ``GraphedCall`` of ``_fill_text``) after that."""
        v = video.context if video is not None else None
        a = audio.context if audio is not None else None
        batch = (video if video is not None else audio).latent.shape[0]
        shapes = tuple(None if c is None else (tuple(c.shape), c.dtype, c.device) for c in (v, a)) + (batch,)
        held = filler.stores.get(slot)
        if held is None or held[0] != shapes:
            store = self.cache_text(video, audio)
            for kv in store:
                for pair in kv:
                    for t in pair or ():
                        static(t)
            filler.stores[slot] = (shapes, store)
            with torch.no_grad():  # refilled as is, then recorded (a signature's second call), so that the
                for _ in range(2):  # next generation's first step replays the graph
                    filler(v, a, batch, store)
            return store
        with torch.no_grad():
            filler(v, a, batch, held[1])
        return held[1]

    def _fill_text(self, v: torch.Tensor | None, a: torch.Tensor | None, batch: int, store: list) -> None:
        """Every block's text keys and values written into ``store`` (``cache_text``'s list) in place."""
        vc = self._project_context(v, batch, False) if v is not None else None
        ac = self._project_context(a, batch, True) if a is not None else None
        for block, kept in zip(self.transformer_blocks, store):
            for dst, src in zip(kept, block.text_keys_values(vc, ac)):
                if dst is not None:
                    dst[0].copy_(src[0])
                    dst[1].copy_(src[1])

    def _stream(self, m: ModalityInput, other: ModalityInput | None, audio: bool, cached_text: bool,
                shard: SequenceShard | None = None) -> Stream:
        cfg = self.cfg
        g = cfg.audio if audio else cfg.video
        p = "audio_" if audio else ""
        dtype = m.latent.dtype
        if shard is None:
            self_mask = None if m.attention_mask is None else self_attention_bias(m.attention_mask, dtype)
        else:  # this rank's video tokens; the mask spans the whole padded sequence (Ulysses queries)
            strengths = sharding.self_strengths(m.attention_mask, shard)
            self_mask = (sharding.key_padding_bias(shard, dtype, m.latent.device) if strengths is None
                         else self_attention_bias(strengths, dtype))
            m = sharding.local_video(m, shard)
        batch = m.latent.shape[0]
        x = getattr(self, p + "patchify_proj")(m.latent)
        ada, embedded = self._timestep(getattr(self, p + "adaln_single"), m.timesteps, batch, dtype, m.timestep_levels)
        s = Stream(
            x=x, context=None if cached_text else self._context(m, audio),
            context_mask=context_bias(m.context_mask, dtype),
            ada=ada, embedded=embedded,
            rope=rope_tables(m.positions, g.dim, g.heads, g.max_pos, cfg.theta, cfg.rope_layout, cfg.rope_float64,
                             dtype),
            self_mask=self_mask, enabled=m.enabled, shard=shard)
        if cfg.cross_attention_adaln:
            # one value for the batch, or one a sample (no search for distinct values)
            sigma = torch.as_tensor(m.sigma)
            levels = ((sigma.reshape(1), torch.zeros(batch, 1, dtype=torch.long, device=sigma.device))
                      if sigma.numel() == 1 else (self._sigma(sigma, batch), torch.arange(batch, device=sigma.device)
                                                  .view(batch, 1)))
            s.prompt_ada, _ = self._timestep(getattr(self, p + "prompt_adaln_single"), self._sigma(sigma, batch),
                                             batch, dtype, levels)
        if other is not None and cfg.video is not None and cfg.audio is not None:
            # Time-only RoPE at the audio cross-attention width with this stream's own head count.
            s.cross_rope = rope_tables(m.positions[:, 0:1], cfg.audio.context_dim, g.heads, (cfg.cross_max_pos,), cfg.theta,
                                       cfg.rope_layout, cfg.rope_float64, dtype)
            t = self._sigma(other.sigma, batch).view(batch, 1) * cfg.timestep_scale_multiplier
            kind = "audio" if audio else "video"
            scale_shift = getattr(self, f"av_ca_{kind}_scale_shift_adaln_single")
            gate = getattr(self, "av_ca_v2a_gate_adaln_single" if audio else "av_ca_a2v_gate_adaln_single")
            factor = cfg.av_ca_timestep_scale_multiplier / cfg.timestep_scale_multiplier
            s.cross_ada = scale_shift(t.flatten(), dtype)[0].view(batch, 1, 4, -1)
            s.cross_gate = gate(t.flatten() * factor, dtype)[0].view(batch, 1, 1, -1)
        return s

    @staticmethod
    def _sigma(sigma: torch.Tensor, batch: int) -> torch.Tensor:
        sigma = torch.as_tensor(sigma)
        if sigma.numel() == 1:
            return sigma.reshape(1).expand(batch)
        if sigma.shape != (batch,):
            raise ValueError(f"sigma must have shape ({batch},) or be a scalar, got {tuple(sigma.shape)}")
        return sigma

    def _skip_plan(self, perturbations: Sequence[Perturbation] | None, batch: int, device, dtype) -> list[dict]:
        plans = [{} for _ in self.transformer_blocks]
        if not perturbations or not any(p.skips for p in perturbations):
            return plans
        if len(perturbations) != batch:
            raise ValueError(f"{len(perturbations)} perturbations given for a batch of {batch}")
        keeps = {}  # one (B, 1, 1) keep mask per pattern of skipping samples
        for i, plan in enumerate(plans):
            for kind, name in _SKIP_NAMES.items():
                skipped = tuple(p.skipped(kind, i) for p in perturbations)
                if all(skipped):
                    plan[name] = BlockSkips(all=True)
                elif any(skipped):
                    if skipped not in keeps:
                        keeps[skipped] = _on_device([0.0 if s else 1.0 for s in skipped], device, dtype).view(batch, 1, 1)
                    plan[name] = BlockSkips(keep=keeps[skipped])
        return plans

    # ----------------------------------------------------------------------------------- forward
    def _output(self, s: Stream, audio: bool) -> torch.Tensor:
        p = "audio_" if audio else ""
        table = getattr(self, p + "scale_shift_table")
        shift, scale = (table[None, None].to(s.x.dtype) + s.embedded[:, :, None]).unbind(dim=2)
        x = layer_norm(s.x, self.cfg.norm_eps) * (1 + scale) + shift
        return getattr(self, p + "proj_out")(x)

    def velocity(self, video: ModalityInput | None, audio: ModalityInput | None,
                 perturbations: Sequence[Perturbation] | None = None, text_cache: list | None = None,
                 sequence: Group | None = None):
        cfg = self.cfg
        if video is None and audio is None:
            raise ValueError("give at least one of video and audio")
        if video is not None and cfg.video is None:
            raise ValueError("this transformer has no video stream")
        if audio is not None and cfg.audio is None:
            raise ValueError("this transformer has no audio stream")
        cached = text_cache is not None
        shard = None
        if sequence is not None and sequence.size > 1 and video is not None:
            shard = sharding.plan(video, sequence, cfg.video.heads, self.sequence_exchange, self.sequence_riders)
        vs = self._stream(video, audio, False, cached, shard) if video is not None else None
        as_ = self._stream(audio, video, True, cached) if audio is not None else None
        first = video if video is not None else audio
        plans = self._skip_plan(perturbations, first.latent.shape[0], first.latent.device, first.latent.dtype)
        graphed = self.__dict__.get("graphed_blocks")
        small = first_tokens(vs, as_) <= GRAPH_MAX_TOKENS
        run = graphed if graphed is not None and small and not self._streamed() else self.run_blocks
        xv, xa = run(vs, as_, plans, text_cache if cached else None)
        if vs is not None:
            vs.x = xv
        if as_ is not None:
            as_.x = xa
        v = self._output(vs, False) if vs is not None else None
        if shard is not None:
            v = shard.gather(v)
        return v, self._output(as_, True) if as_ is not None else None

    def run_blocks(self, vs: Stream | None, as_: Stream | None, plans: list[dict], text_cache: list | None):
        """Every block over the two streams; their final activations (video, audio)."""
        prev, pending = None, None
        for i, (block, plan) in enumerate(zip(self.transformer_blocks, plans)):
            carry = () if pending is None else (prev, pending)
            pending = block(vs, as_, plan, text_cache[i] if text_cache is not None else (None, None), *carry)
            prev = block
        if pending is not None:  # the last block's audio work, its partials gathered (AVBlock.forward)
            prev.finish_pending(as_, pending, None, vs.shard)
        return (vs.x if vs is not None else None), (as_.x if as_ is not None else None)

    def graph_blocks(self, on: bool = True, capture_error_mode: str = "global") -> None:
        """Run the blocks through CUDA graphs (``fastltx.runtime.cuda_graph``), one recording per input
        signature: the host launches one graph a step instead of every kernel (split over several
        processes: one graph between each two collectives, which run eagerly), for host-bound steps:
        passes of at most ``GRAPH_MAX_TOKENS`` tokens (larger ones run plain; docs/benchmarks.md). The graphs hold
        the weights' addresses: the blocks must not be streamed (refused here; streamed at call time:
        the plain path), weights that move (a memory plan taking the model to host memory and back)
        drop the graphs, found by their addresses, and new ones are recorded, as after modules are
        replaced by ``fuse_projections`` and ``to_fp8`` (other replacements: call again); in-place
        changes (LoRA switching) are seen by the graphs as they are. A copy of the model has no
        graphs. ``capture_error_mode``: see ``GraphedCall``."""
        from fastltx.runtime.cuda_graph import GraphedCall
        self.__dict__.pop("graphed_blocks", None)
        self.__dict__.pop("graphed_text", None)  # its stores too (the recordings read them)
        if on and self._streamed():
            raise ValueError("CUDA graphs need the blocks' weights resident: these blocks are streamed")
        if on:
            # where each weight is held (not the tensors: .to() replaces buffers, and a held tensor
            # would stay on the device), read at every call
            slots = _weight_slots(self.transformer_blocks.modules())
            model = weakref.ref(self)  # no cycle: the graphs (and their memory) go with the model
            self.__dict__["graphed_blocks"] = GraphedCall(_owner_method(model, "run_blocks"),
                                                          weights=lambda: [held[n] for held, n in slots],
                                                          capture_error_mode=capture_error_mode)
            # the text cache's refills (``cache_text`` with a slot), which read the caption projections too
            captions = _weight_slots(m for attr in ("caption_projection", "audio_caption_projection")
                                     if hasattr(self, attr) for m in getattr(self, attr).modules())
            filler = GraphedCall(_owner_method(model, "_fill_text"),
                                 weights=lambda: [held[n] for held, n in slots + captions],
                                 capture_error_mode=capture_error_mode)
            filler.stores = {}  # slot -> (the contexts' shapes, the store)
            self.__dict__["graphed_text"] = filler

    @property
    def graphed(self) -> bool:
        """Whether the blocks run through CUDA graphs (``graph_blocks``; not in a copy of the model,
        nor while its blocks are streamed)."""
        return self.__dict__.get("graphed_blocks") is not None and not self._streamed()

    def _streamed(self) -> bool:
        """Whether the blocks' weights come in as they run (pre-hooks: streamed layers); a call then
        takes the plain path, graphed or not."""
        return any(block._forward_pre_hooks for block in self.transformer_blocks)

    def _regraph(self) -> None:
        """After modules were replaced: graphs for the new weights (when graphed)."""
        graphed = self.__dict__.get("graphed_blocks")
        if graphed is not None:
            self.graph_blocks(capture_error_mode=graphed.capture_error_mode)

    def forward(self, video: ModalityInput | None, audio: ModalityInput | None,
                perturbations: Sequence[Perturbation] | None = None, text_cache: list | None = None,
                sequence: Group | None = None):
        """Denoised (x0) predictions (video, audio); a stream not given comes back as None.

        ``text_cache``: from ``cache_text`` on the same contexts, to skip the text projections.
        ``sequence``: a process group over which the video tokens are split (sequence parallelism,
        see sharding.py); every member calls with the same full inputs and gets the full outputs."""
        v, a = self.velocity(video, audio, perturbations, text_cache, sequence)
        return (to_denoised(video, v) if v is not None else None, to_denoised(audio, a) if a is not None else None)


def _weight_slots(modules) -> list[tuple[dict, str]]:
    """(the dict holding it, its name) of every parameter and buffer of ``modules``."""
    return [(held, name) for m in modules for held in (m._parameters, m._buffers)
            for name, t in held.items() if t is not None]


def _owner_method(model: weakref.ref, name: str):
    """A function calling ``name`` of the model ``model`` refers to (graphs holding no reference to it)."""
    def call(*args):
        owner = model()
        if owner is None:
            raise RuntimeError("the transformer these CUDA graphs were made for is gone")
        return getattr(owner, name)(*args)
    return call


def _on_device(values: list[float], device, dtype: torch.dtype) -> torch.Tensor:
    """A small tensor of ``values`` on ``device``; to a GPU through pinned memory, asynchronously (a
    copy from pageable memory would make the host wait for the GPU)."""
    t = torch.tensor(values, dtype=dtype)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# Most tokens (batch x tokens of the video stream as this rank holds it, else of the audio) a pass
# runs through the CUDA graphs of ``graph_blocks``; larger passes are bound by the GPU, not by
# launching its kernels, and run plain (no recording cost, no graph memory). H100, one compiled forward, plain / graphed ms:
# 1,536 tokens fp8 84.0 / 69.7, bf16 84.8 / 85.7; 6,144 tokens bf16 332.3 / 328.8, fp8 253-254 /
# 252-255 (docs/benchmarks.md); 3,840 tokens bf16 on an H200 202.6 / 202.2. Split over 4 H200s, 960
# tokens a GPU: 132.3 / 72.7; over 2, 1,920 a GPU: 119.0 / 119.2 (seventh session).
GRAPH_MAX_TOKENS = 2048


def first_tokens(vs: Stream | None, as_: Stream | None) -> int:
    """Batch x tokens of the video stream (this rank's part), else of the audio."""
    x = (vs if vs is not None else as_).x
    return x.shape[0] * x.shape[1]


def fp8_weight_only(compiled: bool, device: torch.device | str) -> bool:
    """Which fp8 the blocks take: scaled fp8 matmuls when compiled on a GPU that has them (Ada,
    Hopper: the per-token activation quantisation fuses into the kernels around them), else fp8
    weights with matmuls in the run dtype (any GPU: half the memory of bf16 weights). Measured on
    an H100, one 19B forward at 6,144 tokens: eager bf16 407 ms, eager fp8 weights 417-423 ms (one
    dequantisation pass a linear), eager fp8 matmuls 521 ms (451 ms since the feed-forward's GELU and
    quantisation run as one op: still more than fp8 weights), compiled fp8 matmuls 254.5 ms against
    compiled bf16 329 ms (fifth session)."""
    from fastltx.layers.linear import fp8_supported
    return not (compiled and fp8_supported(device))


def fp8_linear(name: str, linear: nn.Linear) -> bool:
    """Whether a block linear (name relative to the block or the model) is stored in fp8: all of them
    but the per-head attention gates (tiny, and sensitive)."""
    return "to_gate_logits" not in name


def to_denoised(m: ModalityInput, velocity: torch.Tensor) -> torch.Tensor:
    """x0 = x - v * t per token, in float32, cast back to the latent dtype."""
    t = m.timesteps.float()
    if t.ndim == 2:
        t = t.unsqueeze(-1)
    return (m.latent.float() - velocity.float() * t).to(m.latent.dtype)
