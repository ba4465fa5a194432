"""Token positions equal the reference's latent tools (VideoLatentTools / AudioLatentTools)."""

import pytest
import torch

from fastltx.models.transformer.positions import audio_positions, video_positions
from tests.parity.reference import require_reference

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fps", [24.0, 25.0])
def test_video_positions(dtype, fps):
    require_reference()
    from ltx_core.components.patchifiers import VideoLatentPatchifier, VideoLatentShape
    from ltx_core.tools import VideoLatentTools
    shape = VideoLatentShape(batch=2, channels=128, frames=4, height=3, width=5)
    ref = VideoLatentTools(VideoLatentPatchifier(1), shape, fps).create_initial_state("cpu", dtype).positions
    ours = video_positions(4, 3, 5, fps, batch=2, dtype=dtype)
    assert ours.dtype == ref.dtype and torch.equal(ours, ref)


def test_audio_positions():
    require_reference()
    from ltx_core.components.patchifiers import AudioLatentShape, AudioPatchifier
    from ltx_core.tools import AudioLatentTools
    shape = AudioLatentShape(batch=2, channels=8, frames=26, mel_bins=16)
    ref = AudioLatentTools(AudioPatchifier(1), shape).create_initial_state("cpu", torch.bfloat16).positions
    ours = audio_positions(26, batch=2)
    assert ours.dtype == ref.dtype and torch.equal(ours, ref)
