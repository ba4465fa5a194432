"""Token states and conditioning items equal the reference's latent tools and conditioning types."""

import pytest
import torch

from fastltx.conditioning.items import ConditioningError, append_keyframes, replace_frame
from fastltx.conditioning.latents import (VideoGrid, audio_latent_frames, audio_state, drop_appended, patchify_audio,
                                          unpatchify_audio, unpatchify_video, video_state)
from tests.parity.reference import require_reference

pytestmark = pytest.mark.parity
GRID = VideoGrid.for_pixels(33, 64, 96, 24.0)  # 5 x 2 x 3 latent grid


def ref_tools():
    from ltx_core.components.patchifiers import VideoLatentPatchifier
    from ltx_core.tools import VideoLatentTools
    from ltx_core.types import VideoLatentShape, VideoPixelShape
    shape = VideoLatentShape.from_pixel_shape(VideoPixelShape(batch=1, frames=33, height=64, width=96, fps=24.0),
                                              latent_channels=8)
    return VideoLatentTools(VideoLatentPatchifier(1), shape, 24.0)


def same(ours, ref):
    assert torch.equal(ours.latent, ref.latent) and torch.equal(ours.clean, ref.clean_latent)
    assert torch.equal(ours.denoise_mask, ref.denoise_mask) and ours.denoise_mask.dtype == ref.denoise_mask.dtype
    assert torch.equal(ours.positions, ref.positions) and ours.positions.dtype == ref.positions.dtype
    assert (ours.attention_mask is None) == (ref.attention_mask is None)
    if ours.attention_mask is not None:
        assert torch.equal(ours.attention_mask, ref.attention_mask)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_items(dtype):
    require_reference()
    from ltx_core.conditioning.types.attention_strength_wrapper import ConditioningItemAttentionStrengthWrapper
    from ltx_core.conditioning.types.keyframe_cond import VideoConditionByKeyframeIndex
    from ltx_core.conditioning.types.latent_cond import VideoConditionByLatentIndex
    tools = ref_tools()
    g = torch.Generator().manual_seed(0)
    initial = torch.randn(1, 8, 5, 2, 3, generator=g).to(dtype)
    ours, ref = video_state(GRID, 8, dtype, "cpu", initial=initial), tools.create_initial_state("cpu", dtype, initial)
    same(ours, ref)
    image = torch.randn(1, 8, 1, 2, 3, generator=g).to(dtype)
    key = torch.randn(1, 8, 1, 2, 3, generator=g).to(dtype)
    key2 = torch.randn(1, 8, 2, 2, 3, generator=g).to(dtype)
    ours = replace_frame(ours, GRID, image, 0.9, latent_index=0)
    ref = VideoConditionByLatentIndex(image, 0.9, 0).apply_to(ref, tools)
    same(ours, ref)
    ours = append_keyframes(ours, GRID, key, frame_index=16, strength=1.0)
    ref = VideoConditionByKeyframeIndex(key, 16, 1.0).apply_to(ref, tools)
    same(ours, ref)
    ours = append_keyframes(ours, GRID, key2, frame_index=0, strength=0.7, cross_attention=0.3)
    ref = ConditioningItemAttentionStrengthWrapper(VideoConditionByKeyframeIndex(key2, 0, 0.7), 0.3).apply_to(ref, tools)
    same(ours, ref)
    ours = append_keyframes(ours, GRID, key, frame_index=24, strength=1.0)  # a mask exists: it grows with 1s
    ref = VideoConditionByKeyframeIndex(key, 24, 1.0).apply_to(ref, tools)
    same(ours, ref)
    ours, ref = drop_appended(ours, GRID.tokens), tools.clear_conditioning(ref)
    same(ours, ref)
    assert torch.equal(unpatchify_video(ours.latent, GRID), tools.unpatchify(ref).latent)


def test_audio_state_and_layout():
    require_reference()
    from ltx_core.components.patchifiers import AudioLatentShape, AudioPatchifier
    from ltx_core.tools import AudioLatentTools
    from ltx_core.types import VideoPixelShape
    shape = AudioLatentShape.from_video_pixel_shape(VideoPixelShape(batch=1, frames=121, height=64, width=64, fps=24.0))
    assert shape.frames == audio_latent_frames(121, 24.0) == 126
    tools = AudioLatentTools(AudioPatchifier(1), shape)
    initial = torch.randn(1, 8, 126, 16)
    ours, ref = audio_state(126, 8, 16, torch.float32, "cpu", initial=initial), tools.create_initial_state(
        "cpu", torch.float32, initial)
    same(ours, ref)
    assert torch.equal(unpatchify_audio(patchify_audio(initial), 8), initial)


def test_bad_conditioning():
    state = video_state(GRID, 8, torch.float32, "cpu")
    with pytest.raises(ConditioningError, match="does not fit"):
        replace_frame(state, GRID, torch.zeros(1, 8, 1, 3, 3), 1.0)
    with pytest.raises(ConditioningError, match="runs past"):
        replace_frame(state, GRID, torch.zeros(1, 8, 2, 2, 3), 1.0, latent_index=4)
