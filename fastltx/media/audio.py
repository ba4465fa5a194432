"""Audio in: the audio track of any audio or video file as a float waveform; resampling.

``read_audio`` decodes with PyAV (imported on first use), converts every sample format to float32
in [-1, 1] and returns stereo: mono is duplicated, more than two channels are down-mixed by
FFmpeg's resampler. ``resample`` uses SciPy's polyphase filter (``resample_poly``).
"""

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fastltx.media.errors import MediaError

# Integer sample formats -> (offset, scale) so that float = (x - offset) / scale.
_INT_FORMATS = {"u8": (128.0, 128.0), "s16": (0.0, 2.0**15), "s32": (0.0, 2.0**31), "s64": (0.0, 2.0**63)}


class Audio(NamedTuple):
    waveform: torch.Tensor  # (channels, samples), float32 in [-1, 1]
    sample_rate: int


def _frame_to_float(frame) -> np.ndarray:
    """One decoded frame -> float32 (channels, samples)."""
    fmt = frame.format.name
    arr = frame.to_ndarray()
    base = fmt.rstrip("p")
    if base in _INT_FORMATS:
        offset, scale = _INT_FORMATS[base]
        arr = (arr.astype(np.float64) - offset) / scale  # exact: power-of-two scales
    arr = arr.astype(np.float32, copy=False)
    if not frame.format.is_planar:  # packed: (1, samples * channels)
        arr = arr.reshape(-1, len(frame.layout.channels)).T
    return arr


def read_audio(path: str | os.PathLike, start_time: float = 0.0, max_duration: float | None = None) -> Audio:
    """The first audio track of ``path`` from ``start_time`` (seconds) for at most ``max_duration``
    seconds (to the end when None), as a stereo float32 waveform (2, samples) at the file's rate.

    Raises MediaError for a missing or unreadable file, a file without audio, or an empty range.
    """
    import av

    if start_time < 0 or (max_duration is not None and max_duration <= 0):
        raise ValueError(f"start_time must be >= 0 and max_duration > 0, got {start_time} and {max_duration}")
    p = Path(path)
    if not p.is_file():
        raise MediaError(path, "no such file")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise MediaError(path, f"cannot be read as audio or video ({e})") from None
    try:
        if not container.streams.audio:
            raise MediaError(path, "has no audio track")
        stream = container.streams.audio[0]
        end_time = None if max_duration is None else start_time + max_duration
        chunks, first_time, rate, downmix = [], None, None, None
        try:  # a seek even to 0, as the reference: it changes how some decoders (AAC) start
            container.seek(int(start_time / stream.time_base), stream=stream)
        except av.FFmpegError:
            container.seek(0)
        try:
            clock = 0.0
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else clock
                rate = rate or frame.sample_rate
                clock = t + frame.samples / frame.sample_rate
                if clock <= start_time:
                    continue
                if end_time is not None and t >= end_time:
                    break
                first_time = t if first_time is None else first_time
                if len(frame.layout.channels) > 2:
                    downmix = downmix or av.AudioResampler(format="fltp", layout="stereo", rate=frame.sample_rate)
                    chunks.extend(_frame_to_float(f) for f in downmix.resample(frame))
                else:
                    chunks.append(_frame_to_float(frame))
            if downmix is not None:
                chunks.extend(_frame_to_float(f) for f in downmix.resample(None))
        except av.FFmpegError as e:
            raise MediaError(path, f"the audio track cannot be decoded ({e})") from None
    finally:
        container.close()
    if not chunks:
        raise MediaError(path, f"the audio track has no samples at or after {start_time} s")
    audio = np.concatenate(chunks, axis=-1)
    skip = round((start_time - first_time) * rate)
    if skip > 0:
        audio = audio[:, skip:]
    if max_duration is not None:
        audio = audio[:, : round(max_duration * rate)]
    if audio.shape[-1] == 0:
        raise MediaError(path, f"the audio track has no samples at or after {start_time} s")
    if audio.shape[0] == 1:
        audio = np.concatenate([audio, audio], axis=0)
    return Audio(torch.from_numpy(np.ascontiguousarray(audio)), int(rate))


def resample(waveform: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """Resample (..., samples) along the last axis with SciPy's polyphase filter; float32 out."""
    if from_rate == to_rate:
        return waveform.float()
    from scipy.signal import resample_poly

    g = math.gcd(int(from_rate), int(to_rate))
    out = resample_poly(waveform.detach().cpu().double().numpy(), int(to_rate) // g, int(from_rate) // g, axis=-1)
    return torch.from_numpy(out).float().to(waveform.device)
