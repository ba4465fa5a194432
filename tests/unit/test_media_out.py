"""MP4 (H.264 + AAC) and lossless output: valid streams, exact lossless round trip, no partial files or
folders, the permissions a plain open() gives."""

import os
import stat

import av
import numpy as np
import pytest
import torch

from fastltx.media.audio import read_audio
from fastltx.media.errors import MediaError
import fastltx.media.video as video_module
from fastltx.media.video import audio_to_int16, write_lossless, write_mp4
from fastltx.pipelines import GenerationResult


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


@pytest.fixture(params=[None, 0o022, 0o002, 0o077], ids=["current", "022", "002", "077"])
def umask(request):
    """The umask the writers run under (None: the process's own), restored afterwards."""
    previous = os.umask(0)
    os.umask(previous if request.param is None else request.param)
    try:
        yield previous if request.param is None else request.param
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path, umask):
    video, audio = clip(frames=2)
    mp4 = write_mp4(tmp_path / "o.mp4", video, 24.0, audio, 24000)
    frames = write_lossless(tmp_path / "frames", video, audio, 24000)
    saved = GenerationResult(video, audio, 24000, 24.0).save(tmp_path / "saved", lossless=True)
    with open(tmp_path / "plain", "w"):
        pass
    assert mode(tmp_path / "plain") == 0o666 & ~umask
    for path in [mp4, *frames.iterdir(), *saved.iterdir()]:
        assert mode(path) == 0o666 & ~umask, path
    assert mode(saved) == 0o777 & ~umask  # the hidden sibling folder renamed into place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "o.mp4", "plain", "saved"]


def test_result_save_lossless_writes_the_folder_whole(tmp_path):
    video, audio = clip(frames=3)
    result = GenerationResult(video, audio, 24000, 24.0)
    (tmp_path / "empty").mkdir()
    for name in ["new", "empty"]:  # a missing folder is created, an empty one replaced
        folder = result.save(tmp_path / name, lossless=True)
        assert folder == tmp_path / name
        assert sorted(p.name for p in folder.iterdir()) == ["audio.wav"] + [f"frame_{i:05d}.png" for i in range(3)]
        with av.open(str(folder / "frame_00002.png")) as c:
            assert np.array_equal(next(c.decode(video=0)).to_ndarray(format="rgb24"), video[2].numpy())
        assert torch.equal(read_audio(folder / "audio.wav").waveform, audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]  # no hidden folder left


def test_result_save_lossless_refuses_a_used_folder_or_a_file(tmp_path):
    video, audio = clip(frames=1)
    result = GenerationResult(video, audio, 24000, 24.0)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MediaError, match="not empty"):
        result.save(tmp_path / "used", lossless=True)
    with pytest.raises(MediaError, match="not a folder"):
        result.save(tmp_path / "file", lossless=True)
    with pytest.raises(MediaError, match="does not exist"):
        result.save(tmp_path / "missing" / "frames", lossless=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "used"]
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "empty"])
def test_result_save_lossless_failing_midway_leaves_nothing(tmp_path, monkeypatch, existing):
    video, audio = clip(frames=3)
    if existing:
        (tmp_path / "frames").mkdir()
    written = []
    atomic_file = video_module.atomic_file

    def failing_on_audio(path, suffix=""):  # every frame written, then the audio fails
        if path.name == "audio.wav":
            written.extend(p.name for p in path.parent.iterdir())
            raise OSError("disk full")
        return atomic_file(path, suffix)
    monkeypatch.setattr(video_module, "atomic_file", failing_on_audio)
    with pytest.raises(OSError, match="disk full"):
        GenerationResult(video, audio, 24000, 24.0).save(tmp_path / "frames", lossless=True)
    assert sorted(written) == [f"frame_{i:05d}.png" for i in range(3)]  # the failure came midway
    assert sorted(p.name for p in tmp_path.iterdir()) == (["frames"] if existing else [])  # no hidden folder
    assert not existing or not any((tmp_path / "frames").iterdir())  # an empty folder given stays as it was
