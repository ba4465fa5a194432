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
            delta = (b.to(w.device, torch.float32) * strength) @ a.to(w.device, torch.float32)
            deltas[key] = deltas[key] + delta if key in deltas else delta
    out = dict(state)
    for key, delta in deltas.items():
        w = state[key]
        out[key] = delta + w.float()
    return out


def lora_metadata_value(lora: LoraWeights, key: str, default=None):
    """A metadata entry of the LoRA file (e.g. IC-LoRA's ``reference_downscale_factor``)."""
    return lora.metadata.get(key, default)


class LoraSwitch:
    """LoRAs switched on and off in place on a loaded model, restoring the exact original weights.

    For pipelines whose second stage adds a LoRA (the distilled LoRA of the two-stage pipelines):
    one transformer in memory instead of two. The first switch keeps a host copy of each targeted
    weight; ``on()`` writes W + sum s_i B_i A_i (formed in float32, as at load time), ``off()``
    copies W back.
    """

    def __init__(self, model: torch.nn.Module, loras: Sequence[tuple[LoraWeights, float]]):
        params = dict(model.named_parameters())
        self.model, self.loras, self.active, self._saved = model, list(loras), False, {}
        self.targets = sorted({k for lora, _ in self.loras for k in lora.pairs})
        for lora, _ in self.loras:
            for key in lora.pairs:
                if key not in params:
                    raise CheckpointError(lora.path, f"LoRA targets {key!r}, which the transformer does not have")

    @torch.no_grad()
    def on(self) -> None:
        if self.active:
            return
        params = dict(self.model.named_parameters())
        for key in self.targets:
            p = params[key]
            if key not in self._saved:
                self._saved[key] = p.detach().to("cpu", copy=True)
            fused = fuse_loras({key: p.detach()}, [(lora, s) for lora, s in self.loras if key in lora.pairs])[key]
            p.copy_(fused.to(p.dtype))
        self.active = True

    @torch.no_grad()
    def off(self) -> None:
        if not self.active:
            return
        params = dict(self.model.named_parameters())
        for key in self.targets:
            params[key].copy_(self._saved[key].to(params[key].device))
        self.active = False
