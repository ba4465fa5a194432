"""Sampling parity with ltx-core / ltx-pipelines 1.0.0: schedules, noise, steps, loops, guidance.

Everything here is compared for exact equality (float32 and bf16), except the guided denoiser on
the tiny transformer, whose batched form reorders GEMM sums (float32 bound 1e-5).
"""

import math

import pytest
import torch

from fastltx.sampling.guidance import GuidanceSchedule, GuiderParams
from fastltx.sampling.loops import euler_loop, gradient_estimating_loop, res2s_loop
from fastltx.sampling.schedules import DISTILLED_SIGMAS, STAGE2_SIGMAS, ltx2_sigmas
from fastltx.sampling.state import TokenState, add_noise
from fastltx.sampling.steps import euler_step
from tests.parity.reference import require_reference

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module", autouse=True)
def _reference():
    require_reference()


def ref_state(s: TokenState):
    from ltx_core.types import LatentState
    return LatentState(latent=s.latent, denoise_mask=s.denoise_mask, positions=s.positions, clean_latent=s.clean,
                       attention_mask=s.attention_mask)


def states(dtype, seed=0, tokens=(12, 5)):
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in tokens:
        latent = torch.randn(1, t, 8, generator=g).to(dtype)
        clean = torch.randn(1, t, 8, generator=g).to(dtype)
        mask = torch.ones(1, t, 1)
        mask[:, :2] = 0.0  # conditioning tokens kept clean
        mask[:, 2] = 0.4  # a partial-strength token
        out.append(TokenState(latent, clean, mask, torch.zeros(1, 1, t, 2)))
    return out


def fake_x0(latent: torch.Tensor, sigma) -> torch.Tensor:
    s = float(sigma)
    return (latent.float() * (1 - 0.5 * s) + 0.3 * torch.sin(3 * latent.float())).to(latent.dtype)


def test_ltx2_schedule_matches_reference_and_known_values():
    from ltx_core.components.schedulers import LTX2Scheduler
    for steps in (1, 2, 8, 15, 30, 40):
        assert torch.equal(ltx2_sigmas(steps), LTX2Scheduler().execute(steps=steps))
    latent = torch.empty(1, 128, 16, 17, 30)  # the HQ pipeline passes its latent: 8,160 tokens
    assert torch.equal(ltx2_sigmas(15, tokens=16 * 17 * 30), LTX2Scheduler().execute(steps=15, latent=latent))
    known_30 = [1.0, .994957, .989603, .983908, .97784, .971358, .964421, .956978, .948972, .940336, .930994,
                .920854, .90981, .897735, .884479, .869858, .853651, .835584, .815319, .792427, .766363, .736418,
                .701656, .660813, .612141, .553148, .480164, .387541, .26612, 0.1, 0.0]
    assert torch.allclose(ltx2_sigmas(30), torch.tensor(known_30), atol=6e-7)


def test_distilled_sigmas():
    from ltx_pipelines.utils.constants import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
    assert list(DISTILLED_SIGMAS) == DISTILLED_SIGMA_VALUES and list(STAGE2_SIGMAS) == STAGE_2_DISTILLED_SIGMA_VALUES


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 0.909375])
def test_noise_draw_and_blend(dtype, scale):
    from ltx_core.components.noisers import GaussianNoiser
    s = states(dtype)[0]
    ours = add_noise(s, torch.Generator().manual_seed(10), scale)
    ref = GaussianNoiser(torch.Generator().manual_seed(10))(ref_state(s), scale)
    assert ours.latent.dtype == dtype and torch.equal(ours.latent, ref.latent)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_euler_step(dtype):
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    s = states(dtype)[0]
    sigmas = ltx2_sigmas(4)
    x0 = fake_x0(s.latent, sigmas[1])
    assert torch.equal(euler_step(s.latent, x0, sigmas[1], sigmas[2]),
                       EulerDiffusionStep().step(s.latent, x0, sigmas, 1))


def _ours_denoise(video, audio, sigma, step):
    return (fake_x0(video.latent, sigma) if video is not None else None,
            fake_x0(audio.latent, sigma) if audio is not None else None)


def _ref_denoise(video_state, audio_state, sigmas, step_index):
    sigma = sigmas[step_index]
    return fake_x0(video_state.latent, sigma), fake_x0(audio_state.latent, sigma)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("loop", ["euler", "gradient_estimation"])
def test_euler_loops(dtype, loop):
    from ltx_core.components.diffusion_steps import EulerDiffusionStep
    from ltx_pipelines.utils import samplers
    v, a = states(dtype)
    sigmas = torch.tensor(DISTILLED_SIGMAS)
    if loop == "euler":
        ov, oa = euler_loop(sigmas, v, a, _ours_denoise, progress=False)
        rv, ra = samplers.euler_denoising_loop(sigmas, ref_state(v), ref_state(a), EulerDiffusionStep(), _ref_denoise)
    else:
        ov, oa = gradient_estimating_loop(sigmas, v, a, _ours_denoise, progress=False)
        rv, ra = samplers.gradient_estimating_euler_denoising_loop(sigmas, ref_state(v), ref_state(a),
                                                                   EulerDiffusionStep(), _ref_denoise)
    assert torch.equal(ov.latent, rv.latent) and torch.equal(oa.latent, ra.latent)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sigmas", [(0.9, 0.5, 0.2, 0.0), STAGE2_SIGMAS, (1.0, 0.99, 0.95, 0.6, 0.02)])
def test_res2s_loop(dtype, sigmas):
    """Covers the bong refinement (small h), its absence (large h / small sigma), the final
    sigma-0 replacement, the SDE noise from the fixed generators and the dtype round trips."""
    from ltx_core.components.diffusion_steps import Res2sDiffusionStep
    from ltx_pipelines.utils import samplers
    v, a = states(dtype, seed=3)
    sig = torch.tensor(sigmas)
    ov, oa = res2s_loop(sig, v, a, _ours_denoise, model_dtype=dtype, progress=False)
    rv, ra = samplers.res2s_audio_video_denoising_loop(sig, ref_state(v), ref_state(a), Res2sDiffusionStep(),
                                                       _ref_denoise, model_dtype=dtype)
    assert torch.equal(ov.latent, rv.latent) and torch.equal(oa.latent, ra.latent)
    assert not torch.equal(ov.latent, v.latent)


@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_guidance_combination(rescale):
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    g = torch.Generator().manual_seed(1)
    cond, neg, ptb, mod = (torch.randn(1, 6, 8, generator=g).to(torch.bfloat16) for _ in range(4))
    ours = GuiderParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=(29,), rescale_scale=rescale, modality_scale=3.0)
    ref = MultiModalGuider(MultiModalGuiderParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=[29],
                                                  rescale_scale=rescale, modality_scale=3.0))
    assert torch.equal(ours.combine(cond, neg, ptb, mod), ref.calculate(cond, neg, ptb, mod))
    assert torch.equal(ours.combine(cond, 0.0, ptb, 0.0), ref.calculate(cond, 0.0, ptb, 0.0))


def test_sigma_binned_schedule():
    from ltx_core.components.guiders import MultiModalGuiderFactory, MultiModalGuiderParams
    bins = {1.0: 3.0, 0.6: 2.0, 0.2: 1.5}
    ours = GuidanceSchedule.binned({k: GuiderParams(cfg_scale=v) for k, v in bins.items()})
    ref = MultiModalGuiderFactory.from_dict({k: MultiModalGuiderParams(cfg_scale=v) for k, v in bins.items()})
    for sigma in (1.5, 1.0, 0.99, 0.6, 0.59, 0.2, 0.1, 0.0):
        assert ours.at(sigma).cfg_scale == ref.params(sigma).cfg_scale, sigma
    assert GuidanceSchedule.constant(GuiderParams(cfg_scale=4.0)).at(0.3).cfg_scale == 4.0
    assert math.isinf(GuidanceSchedule().bins[0][0])
