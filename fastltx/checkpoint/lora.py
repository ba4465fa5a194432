"""LoRA files in the official format, fused into the weights at load time.

Keys: ``diffusion_model.<module>.lora_A.weight`` (rank x in) and ``...lora_B.weight`` (out x rank)
for a transformer weight ``<module>.weight``. Fused weight = W + sum_i strength_i * (B_i @ A_i), with
no alpha/rank scaling (as the reference), formed in float32 and rounded once to the target dtype.
Every LoRA tensor must land on a weight of the model: unmatched or mis-shaped keys are errors, never
silently skipped.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from safetensors import safe_open

from fastltx.checkpoint.safetensors_file import CheckpointError, read_header

PREFIX = "diffusion_model."
_A, _B = ".lora_A.weight", ".lora_B.weight"


@dataclass(frozen=True)
class Lora:
    path: str
    strength: float = 1.0


@dataclass(frozen=True)
class LoraWeights:
    path: str
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]  # "<module>.weight" -> (A, B)
    metadata: dict[str, str]


def read_lora(path: str | os.PathLike) -> LoraWeights:
    """Read and validate a LoRA file's A/B pairs (keys relative to the transformer)."""
    header = read_header(path)
    modules: dict[str, dict[str, str]] = {}
    for key in header.tensors:
        body = key[len(PREFIX):] if key.startswith(PREFIX) else None
        if body is None or not body.endswith((_A, _B)):
            raise CheckpointError(path, f"not an LTX-2 LoRA: unexpected key {key!r} (expected "
                                        f"'{PREFIX}<module>{_A}' and '{PREFIX}<module>{_B}')")
        module, which = body[:-len(_A)], body[-len(_A):]
        modules.setdefault(module, {})[which] = key
    if not modules:
        raise CheckpointError(path, "the LoRA file holds no tensors")
    unpaired = [m for m, d in modules.items() if len(d) != 2]
    if unpaired:
        raise CheckpointError(path, f"LoRA tensors without their A/B partner: {', '.join(sorted(unpaired)[:5])}")
    pairs = {}
    with safe_open(str(path), framework="pt") as f:
        for module, d in modules.items():
            a, b = f.get_tensor(d[_A]), f.get_tensor(d[_B])
            if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
                raise CheckpointError(path, f"LoRA {module}: lora_A {list(a.shape)} and lora_B {list(b.shape)} "
                                            "do not form a low-rank product")
            pairs[module + ".weight"] = (a, b)
    return LoraWeights(str(path), pairs, header.metadata)


def fuse_loras(state: dict[str, torch.Tensor], loras: Sequence[tuple[LoraWeights, float]]) -> dict[str, torch.Tensor]:
    """Return ``state`` with every LoRA-targeted weight replaced by its fused value, in float32 (the
    caller casts once to the model dtype); the LoRA products are formed and summed in float32."""
    deltas: dict[str, torch.Tensor] = {}
    for lora, strength in loras:
        for key, (a, b) in lora.pairs.items():
            if key not in state:
                raise CheckpointError(lora.path, f"LoRA targets {key!r}, which the transformer does not have")
            w = state[key]
            if (b.shape[0], a.shape[1]) != tuple(w.shape):
                raise CheckpointError(lora.path, f"LoRA {key}: product shape {[b.shape[0], a.shape[1]]} does not "
                                                 f"match the weight's {list(w.shape)}")
            delta = _delta(lora, key, strength, w.device)
            deltas[key] = deltas[key] + delta if key in deltas else delta
    out = dict(state)
    for key, delta in deltas.items():
        w = state[key]
        out[key] = delta + w.float()
    return out


def _delta(lora: LoraWeights, key: str, strength: float, device) -> torch.Tensor:
    """strength * (B @ A) in float32 (strength applied to B first, as the reference does)."""
    a, b = lora.pairs[key]
    return (b.to(device, torch.float32) * strength) @ a.to(device, torch.float32)


def lora_metadata_value(lora: LoraWeights, key: str, default=None):
    """A metadata entry of the LoRA file (e.g. IC-LoRA's ``reference_downscale_factor``)."""
    return lora.metadata.get(key, default)


class LoraSwitch:
    """LoRAs set, changed and removed in place on a loaded model, from the exact original weights.

    For pipelines whose stages use a LoRA at different strengths (the distilled LoRA of the two-stage
    pipelines: off / 1.0, or 0.25 / 0.5 in HQ): one transformer in memory instead of one per stage.
    The first change keeps a host copy of each targeted weight; ``set(strengths)`` writes
    W + sum s_i B_i A_i (formed in float32 from the original W, as at load time), ``set(None)``
    copies W back. ``device``: where the products are formed (default: each weight's own device;
    give the GPU for a model whose weights live in host memory).
    """

    def __init__(self, model: torch.nn.Module, loras: Sequence[LoraWeights], device: torch.device | str | None = None):
        params = dict(model.named_parameters())
        self.model, self.loras, self.strengths, self._saved = model, list(loras), None, {}
        self.device = None if device is None else torch.device(device)
        self.targets = sorted({k for lora in self.loras for k in lora.pairs})
        for lora in self.loras:
            for key in lora.pairs:
                if key not in params:
                    raise CheckpointError(lora.path, f"LoRA targets {key!r}, which the transformer does not have")

    @torch.no_grad()
    def set(self, strengths: Sequence[float] | None) -> None:
        strengths = None if strengths is None else tuple(float(s) for s in strengths)
        if strengths == self.strengths:
            return
        if strengths is not None and len(strengths) != len(self.loras):
            raise ValueError(f"{len(strengths)} strengths given for {len(self.loras)} LoRAs")
        params = dict(self.model.named_parameters())
        for key in self.targets:
            p = params[key]
            if key not in self._saved:
                self._saved[key] = p.detach().to("cpu", copy=True)
            work = self.device or p.device
            original = self._saved[key].to(work)
            if strengths is None:
                p.copy_(original)
            else:
                deltas = [_delta(lora, key, s, work) for lora, s in zip(self.loras, strengths) if key in lora.pairs]
                p.copy_((sum(deltas[1:], deltas[0]) + original.float()).to(p.dtype))
        self.strengths = strengths
