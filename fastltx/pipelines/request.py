"""What a generation call asks for, and the checks that run before any model loads."""

import math
import os
from dataclasses import dataclass
from pathlib import Path

from fastltx.media.images import DEFAULT_CRF


class InputError(ValueError):
    """Bad input to a pipeline, reported before any heavy work starts."""


@dataclass(frozen=True)
class ImageInput:
    """An image conditioning the video at pixel frame ``frame`` (0: the first frame) with ``strength``
    (1: kept exactly; lower values let the model move away from it)."""

    path: str
    frame: int = 0
    strength: float = 1.0
    crf: int = DEFAULT_CRF

    @classmethod
    def parse(cls, spec: str) -> "ImageInput":
        """``PATH[:FRAME[:STRENGTH]]`` (as the command line takes it)."""
        parts = spec.rsplit(":", 2)
        while len(parts) > 1 and not _number(parts[-1]):  # a ':' inside the path itself
            parts = [":".join(parts[:2])] + parts[2:]
        path, frame, strength = (parts + [None, None])[:3]
        try:
            return cls(path, int(frame) if frame is not None else 0, float(strength) if strength is not None else 1.0)
        except ValueError:
            raise InputError(f"bad image spec {spec!r}: expected PATH[:FRAME[:STRENGTH]]") from None


@dataclass(frozen=True)
class VideoInput:
    """A conditioning video (an IC-LoRA's reference: depth, pose, edges, ...) with ``strength``
    (1: its tokens are kept clean)."""

    path: str
    strength: float = 1.0

    @classmethod
    def parse(cls, spec: "str | os.PathLike | tuple[str, float] | VideoInput") -> "VideoInput":
        """``PATH[:STRENGTH]`` (as the command line takes it), a (path, strength) pair or a VideoInput."""
        if isinstance(spec, VideoInput):
            return spec
        if isinstance(spec, tuple):
            return cls(str(spec[0]), float(spec[1]))
        path, sep, last = str(spec).rpartition(":")
        return cls(path, float(last)) if sep and path and _number(last) else cls(str(spec))


def _number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def check_request(height: int, width: int, num_frames: int, fps: float, images: tuple[ImageInput, ...] = (),
                  multiple: int = 32, steps: int | None = None) -> None:
    """Raise InputError for sizes not a multiple of ``multiple`` (32, or 64 for two-stage pipelines),
    frame counts not 8k+1, non-positive fps or steps, and unusable images."""
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise InputError(f"height and width must be positive multiples of {multiple} for this pipeline, "
                         f"got {height}x{width}")
    if num_frames < 1 or (num_frames - 1) % 8:
        raise InputError(f"the frame count must be 8k+1 (1, 9, 17, ..., 121), got {num_frames}")
    if not (fps > 0 and math.isfinite(fps)):
        raise InputError(f"fps must be a positive number, got {fps}")
    if steps is not None and steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    for image in images:
        if not Path(image.path).is_file():
            raise InputError(f"{image.path}: no such image file")
        if not 0 <= image.frame < num_frames:
            raise InputError(f"{image.path}: frame {image.frame} is outside the video's {num_frames} frames")
        if not 0.0 <= image.strength <= 1.0:
            raise InputError(f"{image.path}: strength must be in [0, 1], got {image.strength}")


def check_video_input(path: str, num_frames: int, fps: float, what: str = "conditioning video"):
    """A conditioning video must hold at least ``num_frames`` frames at ``fps`` (its first
    ``num_frames`` frames are used; other frame rates are refused, not resampled). Returns its VideoInfo."""
    from fastltx.media.video_in import video_info

    info = video_info(path)
    if not math.isclose(info.fps, fps, rel_tol=1e-3):
        raise InputError(f"{path}: the {what} runs at {info.fps:g} fps but the clip at {fps:g} fps; convert it "
                         f"(e.g. ffmpeg -i IN -r {fps:g} OUT) or generate at its rate")
    if info.frames < num_frames:
        raise InputError(f"{path}: the {what} has {info.frames} frames, fewer than the {num_frames} asked for")
    return info
