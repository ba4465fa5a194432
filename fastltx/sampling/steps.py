"""Diffusion steps: Euler (velocity form), gradient estimation, and the res_2s SDE step."""

import math

import numpy as np
import torch


def to_velocity(sample: torch.Tensor, sigma: torch.Tensor | float, denoised: torch.Tensor) -> torch.Tensor:
    """v = (x - x0) / sigma in float32 with sigma as a Python float, cast to the sample dtype."""
    s = sigma.to(torch.float32).item() if isinstance(sigma, torch.Tensor) else sigma
    if s == 0:
        raise ValueError("sigma must be non-zero to form a velocity")
    return ((sample.float() - denoised.float()) / s).to(sample.dtype)


def to_denoised(sample: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """x0 = x - v * sigma in float32, cast to the sample dtype."""
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.to(torch.float32)
    return (sample.float() - velocity.float() * sigma).to(sample.dtype)


def euler_step(sample: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor | float,
               sigma_next: torch.Tensor | float) -> torch.Tensor:
    """x + v * (sigma_next - sigma), with v rounded to the sample dtype and the update in float32.

    The sigmas may be float32 tensors or Python floats holding float32 values (a schedule read
    once, so that no step waits for the GPU): the difference is taken in float32 either way."""
    velocity = to_velocity(sample, sigma, denoised)
    if isinstance(sigma, torch.Tensor) or isinstance(sigma_next, torch.Tensor):
        delta = sigma_next - sigma
    else:
        delta = float(np.float32(sigma_next) - np.float32(sigma))
    return (sample.float() + velocity.float() * delta).to(sample.dtype)


class GradientEstimation:
    """Gradient-estimation correction of x0 (gamma 2): v <- gamma * (v - v_prev) + v_prev."""

    def __init__(self, gamma: float = 2.0):
        self.gamma, self.previous = gamma, None

    def __call__(self, sample: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        velocity = to_velocity(sample, sigma, denoised)
        if self.previous is not None:
            denoised = to_denoised(sample, self.gamma * (velocity - self.previous) + self.previous, sigma)
        self.previous = velocity
        return denoised


# ----------------------------------------------------------------------------------------- res_2s
def phi(j: int, z: float) -> float:
    """phi_j(z) = (e^z - sum_{k<j} z^k / k!) / z^j, with phi_j(0) = 1 / j!."""
    if abs(z) < 1e-10:
        return 1.0 / math.factorial(j)
    return (math.exp(z) - sum(z**k / math.factorial(k) for k in range(j))) / z**j


def res2s_coefficients(h: float, c2: float = 0.5) -> tuple[float, float, float]:
    """(a21, b1, b2) of the two-stage exponential Runge-Kutta step of log-size h."""
    a21 = c2 * phi(1, -h * c2)
    b2 = phi(2, -h) / c2
    return a21, phi(1, -h) - b2, b2


def sde_step(sample: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """Move from sigma to sigma_next re-injecting noise with sigma_up = sigma_next / 2 (variance
    preserving); returns ``denoised`` when sigma_next is 0. Coefficients keep the sigmas' dtype."""
    sigma_up = torch.minimum(sigma_next * 0.5, sigma_next * 0.9999)
    residual = (sigma_next**2 - sigma_up**2).clamp(min=0) ** 0.5
    alpha = (torch.ones_like(sigma_next) - sigma_next) + residual
    sigma_down = residual / alpha
    sigma_up = torch.nan_to_num(sigma_up, 0.0)
    sigma_down = torch.where(torch.isnan(sigma_down), sigma_next.to(sigma_down.dtype), sigma_down)
    alpha = torch.nan_to_num(alpha, 1.0)
    if torch.any(sigma_up == 0) or torch.any(sigma_next == 0):
        return denoised
    eps = (sample - denoised) / (sigma - sigma_next)
    x0 = sample - sigma * eps
    return (alpha * (x0 + sigma_down * eps) + sigma_up * noise).to(denoised.dtype)


def sde_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """float64 Gaussian noise standardised over the whole tensor, then per sample over (T, C)."""
    n = torch.randn(like.shape, generator=generator, dtype=torch.float64, device=generator.device)
    n = (n - n.mean()) / n.std()
    return (n - n.mean(dim=(-2, -1), keepdim=True)) / n.std(dim=(-2, -1), keepdim=True)
