"""Denoisers: one call per step, returning the (guided) x0 predictions of both streams.

``GuidedDenoiser`` runs the up-to-four passes of a multimodal-guided step (positive, negative
prompt, STG, isolated modality) as one batched transformer forward by default, or one pass at a
time (``batched=False``, less memory); both give the reference's result.

With a ``World`` of several processes (fastltx.runtime.distributed), every rank calls the denoiser
with the same states: the passes are split over the guidance replicas and each pass's video tokens
over the ranks of a replica, and every rank gets the full result back.
"""

from dataclasses import dataclass

import torch

from fastltx.models.transformer import LTXTransformer, ModalityInput, Perturbation, Skip
from fastltx.models.transformer.sharding import sequence_group
from fastltx.runtime.compile import blocks_compiled
from fastltx.runtime.distributed import Group, World, all_gather
from fastltx.sampling.guidance import GuidanceSchedule, GuiderParams
from fastltx.sampling.state import TokenState


def modality(state: TokenState, context: torch.Tensor, sigma: torch.Tensor, enabled: bool = True) -> ModalityInput:
    return ModalityInput(latent=state.latent, sigma=sigma, timesteps=state.timesteps(sigma), positions=state.positions,
                         context=context, attention_mask=state.attention_mask, enabled=enabled,
                         timestep_levels=state.timestep_levels(sigma))


def _cat(inputs: list[ModalityInput]) -> ModalityInput:
    """Stack single passes along the batch (sigma broadcast per sample)."""
    first = inputs[0]
    b = first.latent.shape[0]
    cat = lambda name: torch.cat([getattr(m, name) for m in inputs])  # noqa: E731
    if all(m.sigma is first.sigma for m in inputs) and torch.as_tensor(first.sigma).numel() == 1:
        sigma = first.sigma  # one value for the whole batch (the model broadcasts it)
    else:
        sigma = torch.cat([torch.as_tensor(m.sigma).reshape(-1).expand(b) for m in inputs])
    mask = None if first.attention_mask is None else cat("attention_mask")
    return ModalityInput(latent=cat("latent"), sigma=sigma, timesteps=cat("timesteps"), positions=cat("positions"),
                         context=cat("context"), attention_mask=mask, enabled=first.enabled,
                         timestep_levels=_cat_levels([m.timestep_levels for m in inputs]))


def _cat_levels(levels: list) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The passes' timestep levels stacked along the batch: shared values (the same object in
    every pass) keep their indices, others are concatenated with the indices offset."""
    if any(lv is None for lv in levels):
        return None
    tokens = max(index.shape[1] for _, index in levels)
    if all(values is levels[0][0] for values, _ in levels):
        values, offsets = levels[0][0], [0] * len(levels)
    else:
        values = torch.cat([v for v, _ in levels])
        offsets = [sum(v.numel() for v, _ in levels[:i]) for i in range(len(levels))]
    return values, torch.cat([index.expand(index.shape[0], tokens) + o for (_, index), o in zip(levels, offsets)])


class SimpleDenoiser:
    """Positive prompt only (distilled and stage-2 denoising)."""

    def __init__(self, model: LTXTransformer, video_context: torch.Tensor | None, audio_context: torch.Tensor | None,
                 world: World | None = None):
        self.model, self.video_context, self.audio_context = model, video_context, audio_context
        self._text_cache = None
        self.world = world if world is not None and world.size > 1 else None

    def __call__(self, video: TokenState | None, audio: TokenState | None, sigma: torch.Tensor, step: int):
        v = modality(video, self.video_context, sigma) if video is not None else None
        a = modality(audio, self.audio_context, sigma) if audio is not None else None
        if self._text_cache is None and not self.model.cfg.cross_attention_adaln:
            # the text is fixed for the whole generation; graphed blocks keep it in the "simple" store
            self._text_cache = self.model.cache_text(v, a, slot="simple")
        parallel = {} if self.world is None else {
            "sequence": sequence_group(self.world, v, blocks_compiled(self.model), getattr(self.model, "graphed", False))}
        return self.model(v, a, None, self._text_cache, **parallel)


@dataclass
class _Pass:
    name: str
    perturbation: Perturbation
    negative: bool = False


class GuidedDenoiser:
    """Multimodal guidance with per-modality parameters (constant or binned by sigma)."""

    def __init__(self, model: LTXTransformer, video_context: tuple[torch.Tensor, torch.Tensor | None],
                 audio_context: tuple[torch.Tensor, torch.Tensor | None], video_guidance: GuidanceSchedule,
                 audio_guidance: GuidanceSchedule | None = None, batched: bool = True, world: World | None = None):
        """``*_context``: (positive, negative) text for each stream (negative may be None when no
        guidance needs it); the audio guidance defaults to the video's. ``world`` (default: that of
        a ``SequenceParallel`` model): split the passes (and each pass's video tokens) across its
        processes."""
        self.model, self.batched = model, batched
        world = world if world is not None else getattr(model, "world", None)
        self.world = None if world is None or world.size == 1 else world
        self.contexts = {"video": video_context, "audio": audio_context}
        self.guidance = {"video": video_guidance, "audio": audio_guidance or video_guidance}
        self.last = (None, None)
        self._text_caches: dict = {}

    def _passes(self, pv: GuiderParams, pa: GuiderParams) -> list[_Pass]:
        passes = [_Pass("cond", Perturbation())]
        if pv.needs_negative or pa.needs_negative:
            for name, p in (("video", pv), ("audio", pa)):
                if p.needs_negative and self.contexts[name][1] is None:
                    raise ValueError(f"{name} guidance has cfg_scale {p.cfg_scale} but no negative context was given")
            passes.append(_Pass("uncond_text", Perturbation(), negative=True))
        if pv.needs_perturbed or pa.needs_perturbed:
            skips = []
            if pv.needs_perturbed:
                skips.append((Skip.VIDEO_SELF_ATTN, None if pv.stg_blocks is None else tuple(pv.stg_blocks)))
            if pa.needs_perturbed:
                skips.append((Skip.AUDIO_SELF_ATTN, None if pa.stg_blocks is None else tuple(pa.stg_blocks)))
            passes.append(_Pass("perturbed", Perturbation(tuple(skips))))
        if pv.needs_isolated or pa.needs_isolated:
            passes.append(_Pass("isolated", Perturbation.isolate_modalities()))
        return passes

    def _inputs(self, p: _Pass, name: str, state: TokenState | None, sigma, enabled: bool) -> ModalityInput | None:
        if state is None:
            return None
        positive, negative = self.contexts[name]
        context = negative if p.negative and negative is not None else positive
        return modality(state, context, sigma, enabled)

    def _run(self, passes: list[_Pass], video, audio, sigma, enabled: tuple[bool, bool]) -> dict:
        """x0 of every pass; with a world, pass i runs on guidance replica i % G and all are gathered."""
        if self.world is None:
            return self._run_local(passes, video, audio, sigma, enabled, {})
        layout = self.world.layout(len(passes))
        g, replicas = layout.guidance.rank, layout.guidance.size
        parallel = {"sequence": layout.sequence}  # (also when of size 1: no split, whatever the model's default)
        mine = passes[g::replicas]
        local = self._run_local(mine, video, audio, sigma, enabled, parallel) if mine else {}
        if replicas == 1:
            return local
        return _gather_passes(passes, [local.get(p.name) for p in mine], layout.guidance, (video, audio))

    def _run_local(self, passes: list[_Pass], video, audio, sigma, enabled: tuple[bool, bool], parallel: dict) -> dict:
        """x0 of every pass: one batched forward, or one forward per pass."""
        # every pass but the negative-prompt one reuses the positive inputs, frozen streams included
        per_pass = [(self._inputs(p, "video", video, sigma, True if p.negative else enabled[0]),
                     self._inputs(p, "audio", audio, sigma, True if p.negative else enabled[1])) for p in passes]
        if not self.batched or len(passes) == 1 or not all(enabled):
            return {p.name: self.model(v, a, [p.perturbation] * (v or a).latent.shape[0], **parallel)
                    for p, (v, a) in zip(passes, per_pass)}
        v = _cat([v for v, _ in per_pass]) if video is not None else None
        a = _cat([a for _, a in per_pass]) if audio is not None else None
        b = (video or audio).latent.shape[0]
        perturbations = [p.perturbation for p in passes for _ in range(b)]
        key = tuple(p.name for p in passes)
        if key not in self._text_caches and not self.model.cfg.cross_attention_adaln:
            self._text_caches[key] = self.model.cache_text(v, a)
        ov, oa = self.model(v, a, perturbations, self._text_caches.get(key), **parallel)
        split = lambda t: t.split(b) if t is not None else [None] * len(passes)  # noqa: E731
        return {p.name: out for p, out in zip(passes, zip(split(ov), split(oa)))}

    def __call__(self, video: TokenState | None, audio: TokenState | None, sigma: torch.Tensor, step: int):
        s = float(sigma)
        pv, pa = self.guidance["video"].at(s), self.guidance["audio"].at(s)
        skip_v, skip_a = pv.skips(step), pa.skips(step)
        if skip_v and skip_a:
            return self.last
        outs = self._run(self._passes(pv, pa), video, audio, sigma, (not skip_v, not skip_a))
        result = []
        for i, (params, skipped) in enumerate(((pv, skip_v), (pa, skip_a))):
            cond = outs["cond"][i]
            if cond is None:
                result.append(None)
            elif skipped:
                result.append(self.last[i])
            else:
                get = lambda name: outs[name][i] if name in outs else 0.0  # noqa: E731
                result.append(params.combine(cond, get("uncond_text"), get("perturbed"), get("isolated")))
        self.last = tuple(result)
        return self.last


def _gather_passes(passes: list[_Pass], mine: list[tuple], guidance: Group, states: tuple) -> dict:
    """Every pass's (video, audio) x0 on every replica: replica g ran passes g, g + G, ...; each sends
    its results padded to the same number of passes, in one all-gather per stream."""
    replicas = guidance.size
    slots = -(-len(passes) // replicas)
    gathered = []
    for k, state in enumerate(states):
        if state is None:
            gathered.append(None)
            continue
        outs = [m[k] for m in mine] + [torch.zeros_like(state.latent)] * (slots - len(mine))
        gathered.append(all_gather(torch.stack(outs), guidance))  # (G * slots, B, T, C)
    return {p.name: tuple(None if x is None else x[(i % replicas) * slots + i // replicas] for x in gathered)
            for i, p in enumerate(passes)}
