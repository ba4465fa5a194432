"""IC-LoRA reference tokens, their attention mask, and retake's time spans equal the reference's
conditioning items (VideoConditionByReferenceLatent, the attention-strength wrapper, ICLoraPipeline's
mask downsampling, retake's TemporalRegionMask), float32 and bf16."""

import pytest
import torch

from fastltx.conditioning.items import append_keyframes
from fastltx.conditioning.latents import VideoGrid, audio_state, video_state
from fastltx.conditioning.reference import append_reference, downscale_factor, latent_attention_mask
from fastltx.conditioning.regions import audio_span, keep_all, video_span
from tests.parity.reference import require_reference
from tests.parity.test_conditioning import GRID, ref_tools, same

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_tokens_and_masks(dtype):
    require_reference()
    from ltx_core.conditioning.types.attention_strength_wrapper import ConditioningItemAttentionStrengthWrapper
    from ltx_core.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex
    from ltx_core.conditioning.types.reference_video_cond import VideoConditionByReferenceLatent
    tools = ref_tools()  # 33 frames at 64x96: a 5 x 2 x 3 grid
    g = torch.Generator().manual_seed(1)
    ours, ref = video_state(GRID, 8, dtype, "cpu"), tools.create_initial_state("cpu", dtype)
    small = torch.randn(1, 8, 5, 1, 2, generator=g).to(dtype)  # a reference at half size
    ours = append_reference(ours, GRID, small, strength=0.9, downscale=2)
    ref = VideoConditionByReferenceLatent(small, downscale_factor=2, strength=0.9).apply_to(ref, tools)
    same(ours, ref)
    key = torch.randn(1, 8, 1, 2, 3, generator=g).to(dtype)
    ours = append_keyframes(ours, GRID, key, 8, 1.0)
    ref = VideoConditionByKeyframeIndex(key, 8, 1.0).apply_to(ref, tools)
    same(ours, ref)
    full = torch.randn(1, 8, 5, 2, 3, generator=g).to(dtype)
    cross = torch.rand(1, 30, generator=g) * 0.6
    ours = append_reference(ours, GRID, full, cross_attention=cross)  # a mask appears over three groups
    ref = ConditioningItemAttentionStrengthWrapper(VideoConditionByReferenceLatent(full), cross).apply_to(ref, tools)
    same(ours, ref)
    ours = append_reference(ours, GRID, small, strength=1.0, downscale=2, cross_attention=0.25)
    ref = ConditioningItemAttentionStrengthWrapper(VideoConditionByReferenceLatent(small, 2), 0.25).apply_to(ref,
                                                                                                            tools)
    same(ours, ref)


@pytest.mark.parametrize("pixels,latent", [((33, 64, 96), (5, 2, 3)), ((9, 40, 70), (2, 1, 2)),
                                           ((1, 32, 32), (1, 1, 1)), ((17, 64, 64), (1, 2, 2))])
def test_latent_attention_mask(pixels, latent):
    require_reference()
    from ltx_core.types import VideoLatentShape
    from ltx_pipelines.ic_lora import ICLoraPipeline
    mask = torch.rand(1, 1, *pixels, generator=torch.Generator().manual_seed(2))
    ref = ICLoraPipeline._downsample_mask_to_latent(mask, VideoLatentShape(1, 8, *latent))
    assert torch.equal(latent_attention_mask(mask, *latent), ref)


def test_mask_frames_must_map():
    with pytest.raises(ValueError, match="does not map onto"):
        latent_attention_mask(torch.ones(1, 1, 10, 32, 32), 3, 1, 1)


@pytest.mark.parametrize("start,end", [(0.0, 0.01), (0.2, 0.5), (0.3, 1.375), (1.0, 1.3), (0.04, 0.05)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_time_spans(start, end, dtype):
    require_reference()
    from ltx_core.components.patchifiers import AudioLatentShape, AudioPatchifier
    from ltx_core.tools import AudioLatentTools
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.retake import TemporalRegionMask
    tools = ref_tools()
    grid = VideoGrid.for_pixels(33, 64, 96, 24.0)
    initial = torch.randn(1, 8, 5, 2, 3).to(dtype)
    ours = video_span(video_state(grid, 8, dtype, "cpu", initial=initial), grid, start, end)
    ref = TemporalRegionMask(start, end, 24.0).apply_to(tools.create_initial_state("cpu", dtype, initial), tools)
    same(ours, ref)
    assert 0 < ours.denoise_mask.sum() < ours.denoise_mask.numel()
    shape = AudioLatentShape.from_video_pixel_shape(VideoPixelShape(batch=1, frames=33, height=64, width=96, fps=24.0))
    audio_tools = AudioLatentTools(AudioPatchifier(1), shape)
    a = torch.randn(1, 8, shape.frames, 16).to(dtype)
    ours = audio_span(audio_state(shape.frames, 8, 16, dtype, "cpu", initial=a), start, end)
    ref = TemporalRegionMask(start, end, 24.0).apply_to(audio_tools.create_initial_state("cpu", dtype, a), audio_tools)
    same(ours, ref)
    keep = TemporalRegionMask(0.0, 0.0, 24.0).apply_to(audio_tools.create_initial_state("cpu", dtype, a), audio_tools)
    same(keep_all(audio_state(shape.frames, 8, 16, dtype, "cpu", initial=a)), keep)  # the reference's "keep"


def test_downscale_factor_metadata():
    assert downscale_factor({}, "x") == 1
    assert downscale_factor({"reference_downscale_factor": "4"}, "x") == 4
    for bad in ("0", "-2", "1.5", "two"):
        with pytest.raises(ValueError, match="not a positive integer"):
            downscale_factor({"reference_downscale_factor": bad}, "x")
