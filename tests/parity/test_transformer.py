"""Transformer parity against ltx-core 1.0.0: same checkpoint file, loaded by each side's own loader.

Error measure: max |ours - ref| / max |ref| over the x0 output. float32 bound 1e-5 (measured: 0, the
two are bit-identical on CPU). bf16 bound 4e-3, one bf16 rounding step (2^-8) of the largest value
(measured: 0 as well; we follow the reference's op order, so bf16 rounds alike).
"""

import dataclasses

import pytest
import torch

from fastltx.checkpoint.factory import make_checkpoint
from fastltx.layers.rope import RopeLayout
from fastltx.models.transformer import LTXTransformer, Perturbation, Skip, load_transformer
from tests.helpers import audio_positions, max_rel_error, random_modality, video_positions
from tests.parity.reference import (reference_modality, reference_perturbations, reference_transformer,
                                    require_reference)

pytestmark = pytest.mark.parity
BOUND = {torch.float32: 1e-5, torch.bfloat16: 4e-3}
LAYERS = 3
FPS = 24.0
# latent grid of 17 frames at 64x96: 3 x 2 x 3 = 18 video tokens; 9 audio tokens
GRID, V_TOKENS, A_TOKENS, TEXT = (3, 2, 3), 18, 9, 7


@pytest.fixture(scope="module", autouse=True)
def _reference():
    require_reference()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "v1": make_checkpoint(root / "v1.safetensors", "v1", seed=1, num_layers=LAYERS),
        "v2": make_checkpoint(root / "v2.safetensors", "v2", seed=2, num_layers=LAYERS),
        "v1_video": make_checkpoint(root / "v1_video.safetensors", "v1", seed=3, num_layers=LAYERS, audio=False),
    }


def inputs(model: LTXTransformer, dtype, sigmas=(0.7,), video=True, audio=True, seed=0, clean_tokens=0,
           keyframe_tokens=0, **video_extra):
    """Random inputs; video positions in the model dtype as the reference's pipelines make them, with
    optional appended keyframe tokens (float32 positions, which promote the whole position tensor)."""
    cfg, gen = model.cfg, torch.Generator().manual_seed(seed)
    sigma = torch.tensor(sigmas)
    b = len(sigmas)
    v = a = None
    if video:
        pos = video_positions(*GRID, FPS, b, dtype)
        if keyframe_tokens:
            key = video_positions(1, 2, 3, FPS, b, torch.float32)[:, :, :keyframe_tokens]
            key[:, 0] += 16 / FPS  # a keyframe at pixel frame 16
            pos = torch.cat([pos, key], dim=2)
        v = random_modality(gen, sigma, V_TOKENS + keyframe_tokens, cfg.video.in_channels, pos, TEXT,
                            cfg.caption_channels or cfg.video.context_dim, dtype, clean_tokens, **video_extra)
        if keyframe_tokens:  # appended conditioning tokens are clean (t = 0)
            t = v.timesteps.clone()
            t[:, V_TOKENS:] = 0
            v = dataclasses.replace(v, timesteps=t)
    if audio:
        a = random_modality(gen, sigma.flip(0), A_TOKENS, cfg.audio.in_channels, audio_positions(A_TOKENS, b), TEXT,
                            cfg.caption_channels or cfg.audio.context_dim, dtype)
    return v, a


def compare(ours, ref, v, a, perturbations=None, dtype=torch.float32):
    with torch.no_grad():
        ov, oa = ours(v, a, perturbations)
        rv, ra = ref(reference_modality(v) if v is not None else None,
                     reference_modality(a) if a is not None else None,
                     reference_perturbations(perturbations or [Perturbation()] * (v or a).latent.shape[0]))
    errors = []
    for o, r in ((ov, rv), (oa, ra)):
        assert (o is None) == (r is None)
        if o is not None:
            assert o.dtype == r.dtype and o.shape == r.shape
            assert torch.isfinite(o).all()
            errors.append(max_rel_error(o, r))
    assert max(errors) <= BOUND[dtype], errors
    return errors


@pytest.fixture(scope="module")
def models(checkpoints):
    cache = {}

    def get(name, dtype, video=True, audio=True):
        key = (name, dtype, video, audio)
        if key not in cache:
            path = checkpoints[name]
            cache[key] = (load_transformer(path, dtype=dtype, video=video, audio=audio),
                          reference_transformer(path, dtype, video=video, audio=audio))
        return cache[key]
    return get


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_audio_video(models, version, dtype):
    ours, ref = models(version, dtype)
    compare(ours, ref, *inputs(ours, dtype, sigmas=(0.7, 0.2), clean_tokens=6), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_video_only_from_av_file(models, version, dtype):
    ours, ref = models(version, dtype, audio=False)
    compare(ours, ref, *inputs(ours, dtype, sigmas=(0.5,), audio=False), dtype=dtype)


def test_video_only_file(models):
    ours, ref = models("v1_video", torch.float32, audio=False)
    assert ours.cfg.audio is None
    compare(ours, ref, *inputs(ours, torch.float32, audio=False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_audio_only(models, version, dtype):
    ours, ref = models(version, dtype, video=False)
    compare(ours, ref, *inputs(ours, dtype, sigmas=(0.9, 0.4), video=False), dtype=dtype)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_stg_on_chosen_blocks(models, version):
    ours, ref = models(version, torch.float32)
    v, a = inputs(ours, torch.float32)
    plain = compare(ours, ref, v, a)
    stg = [Perturbation.stg([1])]  # every sample perturbed: the q/k path is skipped in block 1
    compare(ours, ref, v, a, stg)
    with torch.no_grad():  # the perturbation really changes the output
        assert max_rel_error(ours(v, a, stg)[0], ours(v, a)[0]) > 1e-3, plain


def test_modality_isolation(models):
    ours, ref = models("v1", torch.float32)
    v, a = inputs(ours, torch.float32)
    iso = [Perturbation.isolate_modalities()]
    compare(ours, ref, v, a, iso)
    with torch.no_grad():
        assert max_rel_error(ours(v, a, iso)[1], ours(v, a)[1]) > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batch_with_different_sigmas_and_perturbations(models, version, dtype):
    """A guided step's four passes in one batch: plain, STG on blocks 0 and 2, isolated, only a2v skipped."""
    ours, ref = models(version, dtype)
    v, a = inputs(ours, dtype, sigmas=(0.9, 0.6, 0.3, 0.05), clean_tokens=3)
    perts = [Perturbation(), Perturbation.stg([0, 2]), Perturbation.isolate_modalities(),
             Perturbation(((Skip.A2V_CROSS_ATTN, (1,)), (Skip.VIDEO_SELF_ATTN, (2,))))]
    compare(ours, ref, v, a, perts, dtype=dtype)
    # each sample of the batch equals the same sample run alone
    with torch.no_grad():
        bv, ba = ours(v, a, perts)
        for i in range(4):
            pick = lambda m: dataclasses.replace(  # noqa: E731
                m, **{f: getattr(m, f)[i:i + 1] for f in ("latent", "sigma", "timesteps", "positions", "context")})
            sv, sa = ours(pick(v), pick(a), perts[i:i + 1])
            assert max_rel_error(bv[i:i + 1], sv) <= BOUND[dtype] and max_rel_error(ba[i:i + 1], sa) <= BOUND[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_strength_mask(models, dtype):
    ours, ref = models("v1", dtype)
    gen = torch.Generator().manual_seed(5)
    strength = torch.rand(2, V_TOKENS, V_TOKENS, generator=gen)
    strength[:, :, :4] = 0  # fully masked columns
    strength[:, 5, 6] = 1e-30  # below float32's tiny: clamped
    v, a = inputs(ours, dtype, sigmas=(0.7, 0.4), attention_mask=strength)
    compare(ours, ref, v, a, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_appended_keyframe_tokens(models, version, dtype):
    ours, ref = models(version, dtype)
    v, a = inputs(ours, dtype, sigmas=(0.8,), keyframe_tokens=6)
    assert v.positions.dtype == torch.float32  # promoted by the float32 keyframe positions
    compare(ours, ref, v, a, dtype=dtype)


def test_text_context_mask(models):
    ours, ref = models("v2", torch.float32)
    mask = torch.ones(2, TEXT, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    v, a = inputs(ours, torch.float32, sigmas=(0.6, 0.6), context_mask=mask)
    compare(ours, ref, v, a)


def test_parity_measure_catches_a_porting_error(checkpoints, models):
    """Control: a real porting error (the wrong RoPE layout) is far outside the bound."""
    _, ref = models("v1", torch.float32)
    wrong = load_transformer(checkpoints["v1"], dtype=torch.float32)
    wrong.cfg = dataclasses.replace(wrong.cfg, rope_layout=RopeLayout.INTERLEAVED)
    v, a = inputs(wrong, torch.float32)
    with pytest.raises(AssertionError):
        compare(wrong, ref, v, a)
