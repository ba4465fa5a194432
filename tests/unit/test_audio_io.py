"""Reading the audio track of audio and video files (PyAV), with clear errors naming the file."""

import av
import numpy as np
import pytest
import torch

from fastltx.media.audio import MediaError, read_audio


def write_media(path, audio=None, rate=16000, codec="pcm_s16le", layout="mono", fmt="s16", video=False):
    """A small file: optional 5-frame 32x32 MPEG-4 video, optional audio from an ndarray in ``fmt``."""
    with av.open(str(path), "w") as c:
        v = a = None
        if video:
            v = c.add_stream("mpeg4", rate=10)
            v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        if audio is not None:
            a = c.add_stream(codec, rate=rate)
            a.layout = layout
        if v is not None:
            for i in range(5):
                c.mux(v.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")))
            c.mux(v.encode(None))
        if a is not None:
            frame = av.AudioFrame.from_ndarray(audio, format=fmt, layout=layout)
            frame.sample_rate = rate
            c.mux(a.encode(frame))
            c.mux(a.encode(None))
    return path


RAMP = (np.arange(8000) % 20000 - 10000).astype(np.int16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    stereo = (np.stack([np.sin(np.arange(16000) / 10), np.cos(np.arange(16000) / 7)]) * 0.5).astype(np.float32)
    six = (np.random.default_rng(0).standard_normal((6, 4800)) * 3000).astype(np.int16)
    (root / "garbage.mp4").write_bytes(b"\x00 not a media file " * 64)
    return {
        "wav": write_media(root / "mono.wav", RAMP[None], rate=8000),
        "mp4": write_media(root / "av.mp4", stereo, codec="aac", layout="stereo", fmt="fltp", video=True),
        "silent_mp4": write_media(root / "video_only.mp4", video=True),
        "flac51": write_media(root / "six.flac", six.T.reshape(1, -1).copy(), rate=48000, codec="flac",
                              layout="5.1", fmt="s16"),
        "garbage": root / "garbage.mp4",
    }


def test_mono_wav_is_exact_and_duplicated_to_stereo(files):
    audio = read_audio(files["wav"])
    assert audio.sample_rate == 8000 and audio.waveform.dtype == torch.float32
    assert audio.waveform.shape == (2, 8000)
    assert torch.equal(audio.waveform[0], torch.from_numpy(RAMP / 32768.0).float())
    assert torch.equal(audio.waveform[0], audio.waveform[1])


def test_start_time_and_max_duration_are_sample_exact(files):
    audio = read_audio(files["wav"], start_time=0.25, max_duration=0.5)
    assert torch.equal(audio.waveform[0], torch.from_numpy(RAMP[2000:6000] / 32768.0).float())
    assert read_audio(files["wav"], start_time=0.9).waveform.shape == (2, 800)


def test_audio_track_of_a_video(files):
    audio = read_audio(files["mp4"])
    assert audio.sample_rate == 16000 and audio.waveform.shape[0] == 2
    assert audio.waveform.shape[1] >= 16000 and 0.4 < audio.waveform.abs().max() < 0.6
    assert not torch.equal(audio.waveform[0], audio.waveform[1])  # a real stereo track
    assert read_audio(files["mp4"], 0.3, 0.2).waveform.shape == (2, 3200)


def test_surround_is_downmixed_to_stereo(files):
    audio = read_audio(files["flac51"])
    assert audio.waveform.shape == (2, 4800) and audio.sample_rate == 48000
    assert audio.waveform.abs().max() > 0.05


@pytest.mark.parametrize("name, message", [("silent_mp4", "has no audio track"),
                                           ("garbage", "cannot be read as audio or video")])
def test_unusable_files_name_the_file(files, name, message):
    with pytest.raises(MediaError, match=message) as e:
        read_audio(files[name])
    assert str(files[name]) in str(e.value)


def test_missing_file_and_empty_range(files, tmp_path):
    with pytest.raises(MediaError, match="no such file") as e:
        read_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(e.value)
    with pytest.raises(MediaError, match="no samples at or after 5.0 s"):
        read_audio(files["wav"], start_time=5.0)
    with pytest.raises(ValueError):
        read_audio(files["wav"], max_duration=0)
