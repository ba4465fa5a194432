"""MP4 (H.264 + AAC) and lossless output: valid streams, exact lossless round trip, no partial files."""

import av
import numpy as np
import pytest
import torch

from fastltx.media.audio import read_audio
from fastltx.media.errors import MediaError
from fastltx.media.video import audio_to_int16, write_lossless, write_mp4


def clip(frames=17, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(frames, h, w, 3, generator=g) * 255).to(torch.uint8), torch.rand(2, 24000, generator=g) * 2 - 1


def test_mp4_has_h264_video_and_aac_audio(tmp_path):
    video, audio = clip()
    path = write_mp4(tmp_path / "o.mp4", video.split(5), 24.0, audio, 24000)  # chunks, as tiled decoding yields
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert (v.width, v.height) == (96, 64) and float(v.average_rate) == 24.0
        assert sum(1 for _ in c.decode(video=0)) == 17
        assert a.rate == 24000 and a.channels == 2
    assert abs(read_audio(path).waveform.shape[1] - 24000) < 2048  # AAC priming/padding aside


def test_int16_conversion_truncates_like_the_reference():
    w = torch.tensor([[0.5, -0.5, 1.5, 0.99999], [-2.0, 0.0, 3e-5, -3e-5]])
    got = audio_to_int16(w)
    want = (np.clip(w.numpy(), -1, 1) * 32767.0).astype(np.int16).T  # truncation toward zero
    assert got.dtype == np.int16 and np.array_equal(got, want) and got[0, 0] == 16383


def test_lossless_round_trip(tmp_path):
    video, audio = clip(frames=3)
    folder = write_lossless(tmp_path / "out", video, audio, 24000)
    for i in range(3):
        with av.open(str(folder / f"frame_{i:05d}.png")) as c:
            assert np.array_equal(next(c.decode(video=0)).to_ndarray(format="rgb24"), video[i].numpy())
    got = read_audio(folder / "audio.wav")
    assert got.sample_rate == 24000 and torch.equal(got.waveform, audio)


def test_output_folder_must_exist(tmp_path):
    video, _ = clip(frames=1)
    with pytest.raises(MediaError, match="does not exist"):
        write_mp4(tmp_path / "missing" / "o.mp4", video, 24.0)


def test_interrupted_write_leaves_nothing(tmp_path):
    video, _ = clip(frames=4)

    def chunks():
        yield video[:2]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_mp4(tmp_path / "o.mp4", chunks(), 24.0)
    assert list(tmp_path.iterdir()) == []
