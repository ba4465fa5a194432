"""Multimodal guidance: CFG, STG, modality isolation and rescale, per modality, optionally binned by sigma.

The combination works on x0 predictions in the model dtype:
    pred = cond + (cfg - 1)(cond - uncond_text) + stg (cond - perturbed) + (mod - 1)(cond - isolated)
    pred *= r * std(cond) / std(pred) + (1 - r)        (when the rescale r is not 0)
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class GuiderParams:
    cfg_scale: float = 1.0
    stg_scale: float = 0.0
    stg_blocks: tuple[int, ...] = ()
    rescale_scale: float = 0.0
    modality_scale: float = 1.0
    skip_step: int = 0  # reuse the previous prediction on all but every (skip_step + 1)-th step

    @property
    def needs_negative(self) -> bool:
        return not math.isclose(self.cfg_scale, 1.0)

    @property
    def needs_perturbed(self) -> bool:
        return not math.isclose(self.stg_scale, 0.0)

    @property
    def needs_isolated(self) -> bool:
        return not math.isclose(self.modality_scale, 1.0)

    def skips(self, step: int) -> bool:
        return self.skip_step != 0 and step % (self.skip_step + 1) != 0

    def combine(self, cond: torch.Tensor, uncond_text, perturbed, isolated) -> torch.Tensor:
        """Guided x0 from the passes' x0 (a pass that did not run is given as 0.0)."""
        pred = (cond + (self.cfg_scale - 1) * (cond - uncond_text) + self.stg_scale * (cond - perturbed)
                + (self.modality_scale - 1) * (cond - isolated))
        if self.rescale_scale != 0:
            factor = cond.std() / pred.std()
            pred = pred * (self.rescale_scale * factor + (1 - self.rescale_scale))
        return pred


@dataclass(frozen=True)
class GuidanceSchedule:
    """Guider parameters per sigma: bins keyed by their upper sigma bound; (sigma <= key) picks the
    smallest such key, sigmas above every key use the largest. One entry = constant parameters."""

    bins: tuple[tuple[float, GuiderParams], ...] = field(default=((math.inf, GuiderParams()),))

    @classmethod
    def constant(cls, params: GuiderParams) -> "GuidanceSchedule":
        return cls(((math.inf, params),))

    @classmethod
    def binned(cls, by_sigma: Mapping[float, GuiderParams]) -> "GuidanceSchedule":
        if not by_sigma:
            raise ValueError("a sigma-binned guidance schedule needs at least one bin")
        return cls(tuple(sorted(by_sigma.items(), key=lambda kv: kv[0], reverse=True)))

    def at(self, sigma: float) -> GuiderParams:
        covering = [p for bound, p in self.bins if bound >= float(sigma)]
        return covering[-1] if covering else self.bins[0][1]
