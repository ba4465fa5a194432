"""The guided denoiser (batched and sequential) against ltx-pipelines' multi_modal_guider_denoising_func
on the same tiny transformer: float32 bound 1e-5 (max relative error), over several steps."""

import dataclasses

import pytest
import torch

from fastltx.checkpoint.factory import make_checkpoint
from fastltx.models.transformer import load_transformer
from fastltx.sampling.denoisers import GuidedDenoiser, SimpleDenoiser
from fastltx.sampling.guidance import GuidanceSchedule, GuiderParams
from fastltx.sampling.schedules import ltx2_sigmas
from fastltx.sampling.state import TokenState
from tests.helpers import max_rel_error
from tests.parity.reference import reference_transformer, require_reference
from tests.parity.test_sampling import ref_state
from tests.parity.test_transformer import inputs

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module", params=["v1", "v2"])
def setup(request, tmp_path_factory):
    require_reference()
    path = make_checkpoint(tmp_path_factory.mktemp(request.param) / "m.safetensors", request.param, seed=7,
                           num_layers=3, parts=("transformer",))
    ours = load_transformer(path, dtype=torch.float32)
    ref = reference_transformer(path, torch.float32)
    v, a = inputs(ours, torch.float32, sigmas=(1.0,), clean_tokens=6)
    g = torch.Generator().manual_seed(3)
    neg_v, neg_a = torch.randn(v.context.shape, generator=g), torch.randn(a.context.shape, generator=g)
    mask_v = torch.ones(1, v.latent.shape[1], 1)
    mask_v[:, :6] = 0
    vs = TokenState(v.latent, v.latent.clone(), mask_v, v.positions)
    as_ = TokenState(a.latent, a.latent.clone(), torch.ones(1, a.latent.shape[1], 1), a.positions)
    return ours, ref, vs, as_, (v.context, neg_v), (a.context, neg_a)


VIDEO = GuiderParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=(1,), rescale_scale=0.7, modality_scale=3.0)
AUDIO = GuiderParams(cfg_scale=7.0, stg_scale=1.0, stg_blocks=(1,), rescale_scale=0.7, modality_scale=3.0)


def reference_fn(ref, vctx, actx, video: GuiderParams, audio: GuiderParams):
    from ltx_core.components.guiders import MultiModalGuider, MultiModalGuiderParams
    from ltx_pipelines.utils.helpers import multi_modal_guider_denoising_func

    def guider(p, neg):
        return MultiModalGuider(MultiModalGuiderParams(
            cfg_scale=p.cfg_scale, stg_scale=p.stg_scale, stg_blocks=list(p.stg_blocks), rescale_scale=p.rescale_scale,
            modality_scale=p.modality_scale, skip_step=p.skip_step), negative_context=neg)
    return multi_modal_guider_denoising_func(guider(video, vctx[1]), guider(audio, actx[1]), vctx[0], actx[0], ref)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("variant", ["full", "stg_video_only", "skip_step"])
def test_guided_steps(setup, batched, variant):
    ours, ref, vs, as_, vctx, actx = setup
    video, audio = VIDEO, AUDIO
    if variant == "stg_video_only":
        audio = dataclasses.replace(AUDIO, stg_scale=0.0, cfg_scale=1.0)
    if variant == "skip_step":  # video reuses its last prediction every other step, audio every third
        video, audio = dataclasses.replace(VIDEO, skip_step=1), dataclasses.replace(AUDIO, skip_step=2)
    mine = GuidedDenoiser(ours, vctx, actx, GuidanceSchedule.constant(video), GuidanceSchedule.constant(audio),
                          batched=batched)
    theirs = reference_fn(ref, vctx, actx, video, audio)
    sigmas = ltx2_sigmas(6)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for step in range(4):  # fresh latents per step; the skip logic carries state across steps
            v = vs.with_latent(torch.randn(vs.latent.shape, generator=g))
            a = as_.with_latent(torch.randn(as_.latent.shape, generator=g))
            ov, oa = mine(v, a, sigmas[step], step)
            rv, ra = theirs(ref_state(v), ref_state(a), sigmas, step)
            assert max_rel_error(ov, rv) <= 1e-5 and max_rel_error(oa, ra) <= 1e-5, step


def test_simple_denoiser(setup):
    from ltx_pipelines.utils.helpers import simple_denoising_func
    ours, ref, vs, as_, vctx, actx = setup
    sigmas = ltx2_sigmas(3)
    with torch.no_grad():
        ov, oa = SimpleDenoiser(ours, vctx[0], actx[0])(vs, as_, sigmas[1], 1)
        rv, ra = simple_denoising_func(vctx[0], actx[0], ref)(ref_state(vs), ref_state(as_), sigmas, 1)
    assert max_rel_error(ov, rv) <= 1e-5 and max_rel_error(oa, ra) <= 1e-5


def test_missing_negative_context_is_an_error(setup):
    ours, _, vs, as_, vctx, actx = setup
    d = GuidedDenoiser(ours, (vctx[0], None), actx, GuidanceSchedule.constant(VIDEO), GuidanceSchedule.constant(AUDIO))
    with pytest.raises(ValueError, match="no negative context"):
        d(vs, as_, torch.tensor(0.5), 0)
