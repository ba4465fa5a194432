"""Feature extractors: all Gemma hidden states -> one text feature vector per token.

Input: the hidden states stacked layer-minor, (B, T, D, L), and the tokenizer's mask (B, T)
(1 = token, 0 = padding). Both variants normalise, flatten hidden-major (index d * L + l), zero the
padded positions, cast to the activation dtype and project:

* ``FeatureExtractorV1`` (LTX-2): per sample and per layer, over the valid tokens only,
  x -> 8 (x - mean) / (max - min + 1e-6); one projection ``aggregate_embed`` (no bias) whose
  output feeds both connectors.
* ``FeatureExtractorV2`` (LTX-2.3): per token and per layer RMS normalisation over D (eps 1e-6);
  ``video_aggregate_embed`` / ``audio_aggregate_embed`` (with bias), each input scaled by
  sqrt(output width / D).

The dtype flow is the reference's (section 5 of the notes): with bf16 hidden states, V1 takes the
masked sum in bf16 and divides by a float32 count, so the normalisation runs in float32 before the
cast; V2 runs in bf16 throughout. The element-wise part runs in slices of 64 tokens, which keeps
the float32 temporaries small and changes no result when the sequence length is a multiple of 32
(1024 is): PyTorch's CPU bf16 ``rsqrt`` rounds differently in the scalar tail of a vectorised loop,
and such slices leave the same (no) tail as the whole tensor does.
"""

import math

import torch
from torch import nn

EPS = 1e-6
TOKEN_CHUNK = 64  # tokens per slice of the element-wise normalisation (a multiple of 32, see above)


def _per_slice(encoded: torch.Tensor, valid: torch.Tensor, normalise, chunk: int) -> torch.Tensor:
    """Apply ``normalise`` to token slices of (B, T, D, L); return (B, T, D*L) in ``encoded.dtype``,
    padded positions zeroed."""
    b, t, d, n = encoded.shape
    out = torch.empty(b, t, d * n, dtype=encoded.dtype, device=encoded.device)
    for s in range(0, t, chunk):
        normed = normalise(encoded[:, s:s + chunk]).reshape(b, -1, d * n)
        keep = valid[:, s:s + chunk, None]
        out[:, s:s + chunk] = torch.where(keep, normed, torch.zeros_like(normed))  # copy_ casts as .to() does
    return out


def masked_range_norm(encoded: torch.Tensor, valid: torch.Tensor, chunk: int = TOKEN_CHUNK) -> torch.Tensor:
    """V1: 8 (x - mean) / (max - min + eps) per sample and layer over valid tokens; (B, T, D*L)."""
    b, _, d, _ = encoded.shape
    keep = valid[:, :, None, None]
    lengths = valid.sum(dim=1)
    # Same operations and dtypes as the reference: a bf16 sum divided by a float32 count.
    mean = encoded.masked_fill(~keep, 0.0).sum(dim=(1, 2), keepdim=True) / ((lengths * d).view(b, 1, 1, 1) + EPS)
    low = encoded.masked_fill(~keep, float("inf")).amin(dim=(1, 2), keepdim=True)
    high = encoded.masked_fill(~keep, float("-inf")).amax(dim=(1, 2), keepdim=True)
    spread = (high - low) + EPS
    return _per_slice(encoded, valid, lambda x: 8 * (x - mean) / spread, chunk)


def token_rms_norm(encoded: torch.Tensor, valid: torch.Tensor, chunk: int = TOKEN_CHUNK) -> torch.Tensor:
    """V2: x / sqrt(mean over D of x^2 + eps) per token and layer; (B, T, D*L)."""
    def normalise(x):
        return x * torch.rsqrt(torch.mean(x**2, dim=2, keepdim=True) + EPS)
    return _per_slice(encoded, valid, normalise, chunk)


class FeatureExtractorV1(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.aggregate_embed = nn.Linear(in_features, out_features, bias=False)

    def forward(self, encoded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(video features, audio features): the same tensor for both connectors."""
        features = self.aggregate_embed(masked_range_norm(encoded, mask.bool()))
        return features, features


class FeatureExtractorV2(nn.Module):
    def __init__(self, in_features: int, gemma_hidden: int, video_out: int, audio_out: int | None):
        super().__init__()
        self.gemma_hidden = gemma_hidden
        self.video_aggregate_embed = nn.Linear(in_features, video_out)
        self.audio_aggregate_embed = nn.Linear(in_features, audio_out) if audio_out else None

    def _project(self, linear: nn.Linear, normed: torch.Tensor) -> torch.Tensor:
        return linear(normed * math.sqrt(linear.out_features / self.gemma_hidden))

    def forward(self, encoded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = token_rms_norm(encoded, mask.bool())
        video = self._project(self.video_aggregate_embed, normed)
        audio = self._project(self.audio_aggregate_embed, normed) if self.audio_aggregate_embed is not None else None
        return video, audio
