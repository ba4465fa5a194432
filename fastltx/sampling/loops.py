"""Denoising loops over a sigma schedule: Euler, gradient-estimating Euler, and res_2s.

A loop calls ``denoise(video, audio, sigma, step) -> (x0_video, x0_audio)`` (a denoiser from
denoisers.py) with either stream possibly None, keeps clean tokens clean, and advances the states.
"""

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from fastltx.sampling.state import TokenState, keep_clean
from fastltx.sampling.steps import GradientEstimation, euler_step, res2s_coefficients, sde_noise, sde_step

Denoise = Callable[[TokenState | None, TokenState | None, torch.Tensor, int], tuple]


def _x0(denoise: Denoise, video, audio, sigma, step):
    x0v, x0a = denoise(video, audio, sigma, step)
    return (keep_clean(x0v, video) if video is not None else None,
            keep_clean(x0a, audio) if audio is not None else None)


def _each(states, fn):
    return tuple(None if s is None else fn(s, i) for i, s in enumerate(states))


def euler_loop(sigmas: torch.Tensor, video: TokenState | None, audio: TokenState | None, denoise: Denoise,
               progress: bool = True, desc: str = "denoising"):
    host = _on_host(sigmas)
    for i in tqdm(range(len(sigmas) - 1), desc=desc, disable=not progress):
        x0 = _x0(denoise, video, audio, sigmas[i], i)
        video, audio = _each((video, audio), lambda s, k: s.with_latent(euler_step(s.latent, x0[k], host[i],
                                                                                   host[i + 1])))
    return video, audio


def _on_host(sigmas: torch.Tensor) -> list[float]:
    """The schedule as Python floats (its float32 values exactly: the schedules are float32), read
    once: the step arithmetic then needs no value from the GPU, so the host does not wait for the
    GPU at every step."""
    return torch.as_tensor(sigmas).to(torch.float32).tolist()


def gradient_estimating_loop(sigmas: torch.Tensor, video: TokenState | None, audio: TokenState | None,
                             denoise: Denoise, gamma: float = 2.0, progress: bool = True, desc: str = "denoising"):
    """Euler with the gradient-estimation correction of x0 (gamma 2); a final sigma of 0 returns x0."""
    corrections = (GradientEstimation(gamma), GradientEstimation(gamma))
    host = _on_host(sigmas)
    for i in tqdm(range(len(sigmas) - 1), desc=desc, disable=not progress):
        x0 = _x0(denoise, video, audio, sigmas[i], i)
        if host[i + 1] == 0:
            return _each((video, audio), lambda s, k: s.with_latent(x0[k]))
        x0 = tuple(None if x is None else corrections[k](s.latent, x, host[i])
                   for k, (s, x) in enumerate(zip((video, audio), x0)))
        video, audio = _each((video, audio), lambda s, k: s.with_latent(euler_step(s.latent, x0[k], host[i],
                                                                                   host[i + 1])))
    return video, audio


def res2s_loop(sigmas: torch.Tensor, video: TokenState | None, audio: TokenState | None, denoise: Denoise,
               noise_seed: int = -1, substep_seed: int | None = None, bong_iterations: int = 100,
               model_dtype: torch.dtype = torch.bfloat16, progress: bool = True, desc: str = "denoising"):
    """Second-order exponential Runge-Kutta ("res_2s") with SDE noise, as the two-stage HQ pipeline.

    Per step: x0 at the current point, a midpoint at sqrt(sigma * sigma_next) with fresh noise,
    anchor refinement ("bong" iterations while h < 0.5 and sigma > 0.03), x0 at the midpoint, the
    combination, and step-level noise. Noise comes from two generators seeded ``noise_seed`` and
    ``substep_seed`` (default noise_seed + 10000), not from the user's seed (the reference's choice).
    Internals are float64; states are cast to ``model_dtype`` between evaluations. A final sigma of
    0 becomes 0.0011 followed by one last x0 evaluation.
    """
    states = (video, audio)
    device = (video or audio).latent.device
    substep_seed = noise_seed + 10000 if substep_seed is None else substep_seed
    step_gen = torch.Generator(device=device).manual_seed(noise_seed)
    sub_gen = torch.Generator(device=device).manual_seed(substep_seed)
    full_steps = len(sigmas) - 1
    if sigmas[-1] == 0:
        sigmas = torch.cat([sigmas[:-1], torch.tensor([0.0011, 0.0], device=sigmas.device)])
    hs = -torch.log(sigmas[1:].double().cpu() / sigmas[:-1].double().cpu())

    def inject(state, anchor, target, gen, pair):
        return keep_clean(sde_step(anchor, target, pair[0], pair[1], sde_noise(state.latent, gen)), state)

    for i in tqdm(range(full_steps), desc=desc, disable=not progress):
        sigma, sigma_next = sigmas[i].double(), sigmas[i + 1].double()
        anchor = [None if s is None else s.latent.clone().double() for s in states]
        x0_1 = _x0(denoise, states[0], states[1], sigmas[i], i)
        h = hs[i].item()
        a21, b1, b2 = res2s_coefficients(h)
        sub_sigma = torch.sqrt(sigma * sigma_next)
        eps1 = [None if x is None else x.double() - anchor[k] for k, x in enumerate(x0_1)]
        mid = [None if s is None else inject(s, anchor[k], anchor[k].double() + h * a21 * eps1[k], sub_gen,
                                             (sigma, sub_sigma)) for k, s in enumerate(states)]
        if bong_iterations and h < 0.5 and sigma > 0.03:
            for _ in range(bong_iterations):
                for k, s in enumerate(states):
                    if s is not None:
                        anchor[k] = mid[k] - h * a21 * eps1[k]
                        eps1[k] = x0_1[k].double() - anchor[k]
        mid_states = _each(states, lambda s, k: s.with_latent(mid[k].to(model_dtype)))
        x0_2 = _x0(denoise, mid_states[0], mid_states[1], torch.stack([sub_sigma]).to(sigmas.device)[0], 0)
        new = []
        for k, s in enumerate(states):
            if s is None:
                new.append(None)
                continue
            combined = anchor[k] + h * (b1 * eps1[k] + b2 * (x0_2[k].double() - anchor[k]))
            new.append(s.with_latent(inject(s, anchor[k], combined, step_gen, (sigmas[i], sigmas[i + 1]))
                                     .to(model_dtype)))
        states = tuple(new)
    if sigmas[-1] == 0:
        x0 = _x0(denoise, states[0], states[1], sigmas[full_steps], full_steps)
        states = _each(states, lambda s, k: s.with_latent(x0[k].to(model_dtype)))
    return states
