"""Video out: MP4 (H.264 yuv420p + AAC stereo) and a lossless alternative (PNG frames + float WAV).

Files are written to a temporary name in the destination folder and renamed into place when
complete (``fastltx.media.atomic``), so an interrupted run leaves no partial output. Audio goes to
the AAC encoder as int16 obtained by clipping to [-1, 1], scaling by 32767 and truncating (as the
reference writes it).
"""

import itertools
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from fastltx.media.atomic import atomic_file
from fastltx.media.errors import MediaError


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early (before any model loads) when the output folder does not exist."""
    p = Path(path)
    if not p.parent.is_dir():
        raise MediaError(path, f"the output folder {p.parent} does not exist")
    return p


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Fail early when a fresh output folder cannot go at ``folder``: it must be missing or empty."""
    p = check_output_path(folder)
    if p.exists() and not p.is_dir():
        raise MediaError(folder, "exists and is not a folder (lossless output is a folder of PNG frames)")
    if p.is_dir() and any(p.iterdir()):
        raise MediaError(folder, "the folder exists and is not empty (lossless output goes into a fresh folder)")
    return p


def audio_to_int16(waveform: torch.Tensor) -> np.ndarray:
    """(2, S) float -> (S, 2) int16: clip to [-1, 1], times 32767, truncated toward zero."""
    return (waveform.clamp(-1.0, 1.0) * 32767.0).to(torch.int16).T.contiguous().cpu().numpy()


def _chunks(video: torch.Tensor | Iterable[torch.Tensor]):
    return [video] if isinstance(video, torch.Tensor) else video


def write_mp4(path: str | os.PathLike, video: torch.Tensor | Iterable[torch.Tensor], fps: float,
              audio: torch.Tensor | None = None, sample_rate: int | None = None, crf: int | None = None) -> Path:
    """Write uint8 frames (F, H, W, 3) (or an iterable of such chunks) and optional (2, S) float audio."""
    import av

    path = check_output_path(path)
    if path.is_dir():
        raise MediaError(path, "the output path is a folder")
    chunks = iter(_chunks(video))
    first = next(chunks, None)
    if first is None or first.shape[0] == 0:
        raise ValueError("no video frames to write")
    with atomic_file(path, ".mp4") as tmp:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                                          options={} if crf is None else {"crf": str(crf)})
            stream.height, stream.width = first.shape[1] // 2 * 2, first.shape[2] // 2 * 2  # yuv420p needs even sizes
            stream.pix_fmt = "yuv420p"
            audio_stream = None
            if audio is not None:
                audio_stream = container.add_stream("aac", rate=sample_rate)
                audio_stream.codec_context.layout = "stereo"
                audio_stream.codec_context.time_base = Fraction(1, sample_rate)
            for chunk in itertools.chain([first], chunks):
                for frame in chunk.to("cpu", torch.uint8).numpy():
                    frame = np.ascontiguousarray(frame[:stream.height, :stream.width])
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")))
            container.mux(stream.encode())
            if audio_stream is not None:
                _encode_audio(container, audio_stream, audio, sample_rate)
    return path


def _encode_audio(container, stream, audio: torch.Tensor, sample_rate: int) -> None:
    import av

    frame = av.AudioFrame.from_ndarray(audio_to_int16(audio).reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format=stream.codec_context.format or "fltp", layout="stereo", rate=sample_rate)
    pts = 0
    for out in resampler.resample(frame) + resampler.resample(None):
        out.pts = pts
        pts += out.samples
        container.mux(stream.encode(out))
    container.mux(stream.encode())


def write_lossless(folder: str | os.PathLike, video: torch.Tensor | Iterable[torch.Tensor],
                   audio: torch.Tensor | None = None, sample_rate: int | None = None) -> Path:
    """PNG frames (frame_00000.png, ...) and audio.wav (32-bit float) in ``folder`` (created), each file
    atomic; ``GenerationResult.save`` makes the whole folder atomic."""
    import av

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MediaError(folder, "exists and is not a folder")
    if not folder.exists():
        check_output_path(folder).mkdir()
    index = 0
    for chunk in _chunks(video):
        for frame in chunk.to("cpu", torch.uint8).numpy():
            target = folder / f"frame_{index:05d}.png"
            with atomic_file(target, ".png") as tmp:
                with av.open(tmp, mode="w", format="image2") as c:
                    s = c.add_stream("png")
                    s.height, s.width, s.pix_fmt = frame.shape[0], frame.shape[1], "rgb24"
                    c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), "rgb24")))
                    c.mux(s.encode())
            index += 1
    if audio is not None:
        with atomic_file(folder / "audio.wav", ".wav") as tmp:
            with av.open(tmp, mode="w", format="wav") as c:
                s = c.add_stream("pcm_f32le", rate=sample_rate)
                s.codec_context.layout = "stereo"
                frame = av.AudioFrame.from_ndarray(audio.float().T.contiguous().cpu().numpy().reshape(1, -1),
                                                   format="flt", layout="stereo")
                frame.sample_rate = sample_rate
                c.mux(s.encode(frame))
                c.mux(s.encode())
    return folder
