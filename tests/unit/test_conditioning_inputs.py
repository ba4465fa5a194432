"""Bad input to the conditioning pipelines: a clear one-line error before any model loads.

The pipelines are built over a checkpoint that holds the tiny model's header and no weights, so
any model loading would fail with a CheckpointError instead of the InputError / MediaError expected.
"""

import av
import numpy as np
import pytest
import torch

from fastltx.checkpoint.factory import PARTS, make_lora, write_checkpoint
from fastltx.media.errors import MediaError
from fastltx.pipelines import ImageInput, InputError, VideoInput, load_pipeline


def write_clip(path, frames: int, fps: int = 24, size=(64, 96), audio_seconds: float | None = None):
    """A small H.264 clip, with a 16 kHz stereo AAC track when ``audio_seconds`` is given."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.height, v.width, v.pix_fmt = *size, "yuv420p"
        a = None
        if audio_seconds is not None:
            a = c.add_stream("aac", rate=16000)
            a.layout = "stereo"
        for i in range(frames):
            c.mux(v.encode(av.VideoFrame.from_ndarray(np.full((*size, 3), 10 * i, np.uint8), format="rgb24")))
        c.mux(v.encode(None))
        if a is not None:
            samples = np.zeros((2, int(audio_seconds * 16000)), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate = 16000
            c.mux(a.encode(frame))
            c.mux(a.encode(None))
    return str(path)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    config = {k: v for part in PARTS.values() for k, v in part("v1", "tiny").config.items()}
    write_checkpoint(root / "header-only.safetensors", {"unused": torch.zeros(1)}, config)
    (root / "gemma").mkdir()
    (root / "upsampler.safetensors").write_bytes(b"not an upsampler")
    make_lora(root / "ic.safetensors", metadata={"reference_downscale_factor": "2"})
    make_lora(root / "plain.safetensors", seed=1)
    make_lora(root / "bad.safetensors", seed=2, metadata={"reference_downscale_factor": "two"})
    make_lora(root / "three.safetensors", seed=3, metadata={"reference_downscale_factor": "3"})
    write_clip(root / "clip17.mp4", 17, audio_seconds=0.8)
    write_clip(root / "clip5.mp4", 5)
    write_clip(root / "clip30fps.mp4", 17, fps=30)
    write_clip(root / "clip12.mp4", 12, audio_seconds=0.5)
    write_clip(root / "odd.mp4", 17, size=(48, 96))
    with av.open(str(root / "tone.wav"), "w") as c:
        a = c.add_stream("pcm_s16le", rate=16000)
        a.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 32000), np.int16), format="s16", layout="stereo")
        frame.sample_rate = 16000
        c.mux(a.encode(frame))
        c.mux(a.encode(None))
    return root


def pipe(root, name, loras=(), **kw):
    p = load_pipeline(name, root / "header-only.safetensors", root / "gemma", root / "upsampler.safetensors",
                      loras=[(root / f, 1.0) for f in loras], device="cpu", dtype=torch.float32, **kw)
    return p


def nothing_loaded(p):
    assert not {"_transformer", "text_encoder", "video_encoder", "audio_encoder"} & set(vars(p.components))


IC = dict(height=128, width=256, num_frames=17)


def test_ic_lora_reads_the_downscale_factor(root):
    assert pipe(root, "ic-lora", ["ic.safetensors"]).downscale == 2
    assert pipe(root, "ic-lora", ["plain.safetensors"]).downscale == 1  # none given: 1, as the reference
    assert pipe(root, "ic-lora", ["plain.safetensors", "ic.safetensors"]).downscale == 2


@pytest.mark.parametrize("loras,match", [((), "needs an IC-LoRA"), (("bad.safetensors",), "not a positive integer"),
                                         (("ic.safetensors", "three.safetensors"), "conflicts")])
def test_ic_lora_files(root, loras, match):
    with pytest.raises(InputError, match=match):
        pipe(root, "ic-lora", loras)


@pytest.mark.parametrize("video,kw,match", [
    ("clip5.mp4", {}, "has 5 frames, fewer than the 17"),
    ("clip30fps.mp4", {}, "runs at 30 fps but the clip at 24 fps"),
    ("clip17.mp4", dict(height=128, width=192), "multiples of 128"),  # downscale 2: stage 1 / 2 must be /32
    ("clip17.mp4", dict(attention_strength=1.5), "attention_strength"),
    ("clip17.mp4", dict(attention_mask=torch.ones(1, 1, 4, 8, 8)), "does not map onto"),
    ("clip17.mp4", dict(attention_mask="clip5.mp4"), "attention mask video has 5 frames"),
])
def test_ic_lora_bad_videos(root, video, kw, match):
    p = pipe(root, "ic-lora", ["ic.safetensors"])
    mask = kw.get("attention_mask")
    if isinstance(mask, str):
        kw["attention_mask"] = str(root / mask)
    with pytest.raises(InputError, match=match):
        p("a fox", [(str(root / video), 1.0)], **{**IC, **kw})
    nothing_loaded(p)


def test_ic_lora_missing_and_empty(root):
    p = pipe(root, "ic-lora", ["ic.safetensors"])
    with pytest.raises(MediaError, match="no such video file"):
        p("a fox", [str(root / "missing.mp4")], **IC)
    with pytest.raises(MediaError, match="has no video track"):
        p("a fox", [str(root / "tone.wav")], **IC)
    with pytest.raises(MediaError, match="cannot be read as a video"):
        p("a fox", [str(root / "ic.safetensors")], **IC)
    with pytest.raises(InputError, match="at least one reference video"):
        p("a fox", [], **IC)
    with pytest.raises(InputError, match="strength"):
        p("a fox", [VideoInput(str(root / "clip17.mp4"), 1.2)], **IC)
    nothing_loaded(p)


def test_video_input_parse():
    assert VideoInput.parse("a.mp4:0.5") == VideoInput("a.mp4", 0.5)
    assert VideoInput.parse("C:/x/a.mp4") == VideoInput("C:/x/a.mp4", 1.0)
    assert VideoInput.parse(("a.mp4", 0.3)) == VideoInput("a.mp4", 0.3)


def test_keyframes_needs_an_image(root):
    p = pipe(root, "keyframes", distilled_lora=root / "plain.safetensors")
    with pytest.raises(InputError, match="at least one image"):
        p("a fox", height=128, width=128, num_frames=9)
    with pytest.raises(InputError, match="frame 9 is outside"):
        p("a fox", height=128, width=128, num_frames=9, images=[ImageInput(str(root / "clip5.mp4"), 9)])
    nothing_loaded(p)


def test_a2v_audio(root):
    p = pipe(root, "a2v", distilled_lora=root / "plain.safetensors")
    kw = dict(height=128, width=128, num_frames=17, fps=24.0)
    with pytest.raises(MediaError, match="has no audio track"):
        p("a fox", str(root / "clip5.mp4"), **kw)
    with pytest.raises(MediaError, match="no such file"):
        p("a fox", str(root / "missing.wav"), **kw)
    with pytest.raises(InputError, match="shorter than the clip"):
        p("a fox", str(root / "clip12.mp4"), **kw)  # 0.5 s of audio for 0.71 s of video
    with pytest.raises(InputError, match="shorter than the clip"):
        p("a fox", str(root / "clip17.mp4"), audio_start=0.5, **kw)
    with pytest.raises(InputError, match="audio_duration"):
        p("a fox", str(root / "clip17.mp4"), audio_duration=0, **kw)


def test_retake_spans_and_sources(root):
    p = pipe(root, "retake")
    clip = str(root / "clip17.mp4")  # 17 frames at 24 fps: 0.708 s
    for start, end in [(0.3, 0.3), (0.5, 0.2), (-0.1, 0.2), (0.2, 0.8)]:
        with pytest.raises(InputError, match="must be non-empty and inside"):
            p(clip, "a fox", start, end)
    with pytest.raises(InputError, match="8k\\+1 frames"):
        p(str(root / "clip12.mp4"), "a fox", 0.1, 0.2)
    with pytest.raises(InputError, match="multiples of 32"):
        p(str(root / "odd.mp4"), "a fox", 0.1, 0.2)
    with pytest.raises(InputError, match="regenerate"):
        p(clip, "a fox", 0.1, 0.2, regenerate="everything")
    with pytest.raises(MediaError, match="no such video file"):
        p(str(root / "missing.mp4"), "a fox", 0.1, 0.2)
    nothing_loaded(p)
