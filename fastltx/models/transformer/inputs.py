"""What the transformer takes: one ``ModalityInput`` per stream and per-sample perturbations."""

from dataclasses import dataclass
from enum import Enum

import torch


@dataclass(frozen=True)
class ModalityInput:
    """One modality's tokens for a transformer call.

    latent:     (B, T, C) patchified latent tokens (noisy tokens, then any appended conditioning).
    sigma:      (B,) the step's noise level per sample (drives the other stream's AV cross-attention
                modulation and, in LTX-2.3, the prompt AdaLN).
    timesteps:  (B, T) or (B, T, 1) per-token noise level, sigma * denoise_mask (0 for clean tokens).
    positions:  (B, n_axes, T, 2) [start, end) bounds: pixels/seconds for video (time in seconds),
                seconds for audio. Their dtype is part of the numerics (the reference uses bf16
                video positions; appended keyframe tokens promote them to float32).
    context:    (B, S, D_text) text features.
    context_mask:   optional (B, S) binary mask (1 = keep) or an additive float mask.
    attention_mask: optional (B, T, T) self-attention strengths in [0, 1].
    enabled:    False freezes the stream (it still feeds the other stream's cross-attention).
    timestep_levels: optional (values (K,), index (B, T) or (B, 1) long) with
                timesteps[b, t] == values[index[b, t]] (index (B, 1): all tokens of a sample alike):
                the distinct timesteps, known to the caller (``TokenState.timestep_levels``); without
                them the model finds them itself (``torch.unique``: the host waits for the GPU).
    """

    latent: torch.Tensor
    sigma: torch.Tensor
    timesteps: torch.Tensor
    positions: torch.Tensor
    context: torch.Tensor
    context_mask: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    enabled: bool = True
    timestep_levels: tuple[torch.Tensor, torch.Tensor] | None = None


def distinct_levels(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (K,), index (B, N) or (B, 1)) of a (B, N) tensor: its sorted distinct values and each
    entry's index into them, the index narrowed to (B, 1) when every row holds one value. The host
    waits for the GPU here (the number of distinct values)."""
    values, index = torch.unique(t, return_inverse=True)
    if bool((index == index[:, :1]).all()):
        index = index[:, :1]
    return values, index


class Skip(str, Enum):
    """Attentions a perturbed sample can skip (STG, modality isolation)."""

    VIDEO_SELF_ATTN = "video_self_attn"  # replaced by the value pass-through
    AUDIO_SELF_ATTN = "audio_self_attn"
    A2V_CROSS_ATTN = "a2v_cross_attn"  # contribution dropped
    V2A_CROSS_ATTN = "v2a_cross_attn"


@dataclass(frozen=True)
class Perturbation:
    """The skips of one sample: pairs of (what, blocks), blocks None meaning every block."""

    skips: tuple[tuple[Skip, tuple[int, ...] | None], ...] = ()

    def skipped(self, what: Skip, block: int) -> bool:
        return any(w == what and (blocks is None or block in blocks) for w, blocks in self.skips)

    @classmethod
    def stg(cls, blocks: tuple[int, ...] | list[int], video: bool = True, audio: bool = True) -> "Perturbation":
        """Spatio-temporal guidance: self-attention replaced by its value projection in ``blocks``."""
        blocks = tuple(blocks)
        kinds = [Skip.VIDEO_SELF_ATTN] * video + [Skip.AUDIO_SELF_ATTN] * audio
        return cls(tuple((k, blocks) for k in kinds))

    @classmethod
    def isolate_modalities(cls) -> "Perturbation":
        """Both audio-video cross-attentions skipped in every block (modality guidance)."""
        return cls(((Skip.A2V_CROSS_ATTN, None), (Skip.V2A_CROSS_ATTN, None)))
