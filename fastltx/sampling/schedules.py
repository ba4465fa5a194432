"""Sigma schedules: the LTX-2 token-count-shifted schedule and the distilled sigma lists."""

import math

import torch

# The distilled model's 8 steps, and the 3 refinement steps of every two-stage pipeline's stage 2.
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE2_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)

_BASE_TOKENS, _MAX_TOKENS = 1024, 4096


def ltx2_sigmas(steps: int, tokens: int | None = None, max_shift: float = 2.05, base_shift: float = 0.95,
                stretch: bool = True, terminal: float = 0.1) -> torch.Tensor:
    """``steps + 1`` float32 sigmas from 1 to 0.

    The shift mu grows linearly with the latent token count (``tokens``; the pipelines other than
    two-stage HQ pass none, which means 4,096: mu = 2.05), sigma' = e^mu / (e^mu + 1/sigma - 1), and
    with ``stretch`` the non-zero sigmas are rescaled so that the last one equals ``terminal``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    n = _MAX_TOKENS if tokens is None else tokens
    slope = (max_shift - base_shift) / (_MAX_TOKENS - _BASE_TOKENS)
    mu = n * slope + (base_shift - slope * _BASE_TOKENS)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    sigmas = torch.where(sigmas != 0, math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1)), 0)
    if stretch:
        nonzero = sigmas != 0
        one_minus = 1.0 - sigmas[nonzero]
        sigmas[nonzero] = 1.0 - one_minus / (one_minus[-1] / (1.0 - terminal))
    return sigmas.to(torch.float32)
