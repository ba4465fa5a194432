"""Keyframe interpolation: the two-stage guided pipeline with every image appended as keyframe tokens
at its frame (frame 0 included, where the other pipelines replace the first latent frame), so the
video passes through each keyframe."""

from collections.abc import Sequence

import torch

from fastltx.pipelines.guided import TwoStagePipeline
from fastltx.pipelines.request import ImageInput, InputError


class KeyframesPipeline(TwoStagePipeline):
    name = "keyframes"
    keyframes = True

    def start(self, seed: int, height: int, width: int, num_frames: int, fps: float,
              images: Sequence[ImageInput], steps: int | None = None) -> torch.Generator:
        if not images:
            raise InputError("the keyframes pipeline needs at least one image (images=[ImageInput(path, frame), ...])")
        return super().start(seed, height, width, num_frames, fps, images, steps)
