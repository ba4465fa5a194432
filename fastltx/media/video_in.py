"""Video in: a video file's stream facts and its frames as RGB, decoded with PyAV (imported on first use).

Frames are converted to RGB by FFmpeg's swscale as the reference converts them, so conditioning
videos give the model the same pixels.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastltx.media.errors import MediaError


@dataclass(frozen=True)
class VideoInfo:
    fps: float  # the stream's average frame rate
    frames: int
    height: int
    width: int
    has_audio: bool

    @property
    def duration(self) -> float:
        return self.frames / self.fps


def _open(path: str | os.PathLike):
    import av

    if not Path(path).is_file():
        raise MediaError(path, "no such video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise MediaError(path, f"cannot be read as a video ({e})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(path, "has no video track")
    return container


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count (from the container, or by decoding when it does not say), size and
    whether an audio track is present."""
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        if not stream.average_rate:
            raise MediaError(path, "the video track has no frame rate")
        frames = stream.frames
        if not frames:
            try:
                frames = sum(1 for _ in container.decode(stream))
            except av.FFmpegError as e:
                raise MediaError(path, f"the video track cannot be decoded ({e})") from None
        return VideoInfo(float(stream.average_rate), int(frames), stream.codec_context.height,
                         stream.codec_context.width, bool(container.streams.audio))
    finally:
        container.close()


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> torch.Tensor:
    """The first ``max_frames`` frames (all when None) as uint8 (F, H, W, 3) RGB."""
    import av

    container = _open(path)
    frames = []
    try:
        for frame in container.decode(container.streams.video[0]):
            frames.append(frame.to_rgb().to_ndarray())
            if max_frames is not None and len(frames) == max_frames:
                break
    except av.FFmpegError as e:
        raise MediaError(path, f"the video track cannot be decoded ({e})") from None
    finally:
        container.close()
    if not frames:
        raise MediaError(path, "the video track has no frames")
    return torch.from_numpy(np.stack(frames))
