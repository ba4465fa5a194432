"""What a pipeline call returns: frames, audio, rates, and how to save them."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastltx.media.video import write_lossless, write_mp4


@dataclass
class GenerationResult:
    video: torch.Tensor  # uint8 (F, H, W, 3)
    audio: torch.Tensor | None  # float32 (2, S) in [-1, 1]
    sample_rate: int | None
    fps: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def save(self, path: str | os.PathLike, lossless: bool = False) -> Path:
        """MP4 (H.264 + AAC); with ``lossless``, a folder of PNG frames and a 32-bit float WAV."""
        if lossless:
            return write_lossless(path, self.video, self.audio, self.sample_rate)
        return write_mp4(path, self.video, self.fps, self.audio, self.sample_rate)
