"""What a pipeline call returns: frames, audio, rates, and how to save them."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastltx.media.atomic import atomic_folder
from fastltx.media.video import check_output_folder, write_lossless, write_mp4


@dataclass
class GenerationResult:
    video: torch.Tensor  # uint8 (F, H, W, 3)
    audio: torch.Tensor | None  # float32 (2, S) in [-1, 1]
    sample_rate: int | None
    fps: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    def save(self, path: str | os.PathLike, lossless: bool = False) -> Path:
        """MP4 (H.264 + AAC; an existing file is replaced); with ``lossless``, a folder of PNG frames and
        a 32-bit float WAV, which must be new or empty (MediaError otherwise). Either appears whole or
        not at all: the folder is filled as a hidden sibling and renamed into place when complete."""
        if not lossless:
            return write_mp4(path, self.video, self.fps, self.audio, self.sample_rate)
        folder = check_output_folder(path)
        with atomic_folder(folder) as tmp:
            write_lossless(tmp, self.video, self.audio, self.sample_rate)
        return folder
