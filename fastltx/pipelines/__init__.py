"""Pipelines by name, and ``load_pipeline``."""

import os
from collections.abc import Sequence

import torch

from fastltx.pipelines.base import Pipeline
from fastltx.pipelines.components import Components, ModelFiles
from fastltx.pipelines.distilled import DistilledPipeline
from fastltx.pipelines.guided import OneStagePipeline, TwoStageHQPipeline, TwoStagePipeline
from fastltx.pipelines.request import ImageInput, InputError
from fastltx.pipelines.result import GenerationResult

PIPELINES: dict[str, type[Pipeline]] = {
    "one-stage": OneStagePipeline,
    "two-stage": TwoStagePipeline,
    "two-stage-hq": TwoStageHQPipeline,
    "distilled": DistilledPipeline,
}
NEEDS = {  # pipeline -> (upsampler, distilled LoRA for the second stage)
    "one-stage": (False, False),
    "two-stage": (True, True),
    "two-stage-hq": (True, True),
    "distilled": (True, False),
}


def load_pipeline(name: str, checkpoint: str | os.PathLike, text_encoder: str | os.PathLike | None = None,
                  upsampler: str | os.PathLike | None = None,
                  distilled_lora: tuple[str | os.PathLike, float] | str | os.PathLike | None = None,
                  loras: Sequence[tuple[str | os.PathLike, float]] = (), device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.bfloat16, attention_backend: str | None = None,
                  compile: bool = False, fp8: bool = False) -> Pipeline:
    """A pipeline by name over local official files. Models load on first use and stay loaded.

    ``compile`` compiles the transformer blocks on first use (about 10 s at full size on an H100,
    ~20% faster steps); ``fp8`` runs the block linears in float8 on Hopper/Ada GPUs."""
    if name not in PIPELINES:
        raise InputError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    if isinstance(distilled_lora, (str, os.PathLike)):
        distilled_lora = (distilled_lora, 1.0)
    files = ModelFiles(str(checkpoint), None if text_encoder is None else str(text_encoder),
                       None if upsampler is None else str(upsampler), tuple((str(p), float(s)) for p, s in loras),
                       () if distilled_lora is None else ((str(distilled_lora[0]), float(distilled_lora[1])),))
    needs_upsampler, needs_lora = NEEDS[name]
    files.check(needs_upsampler, needs_lora, name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return PIPELINES[name](Components(files, device, dtype, attention_backend, compile, fp8))


__all__ = ["Components", "GenerationResult", "ImageInput", "InputError", "ModelFiles", "PIPELINES", "Pipeline",
           "load_pipeline"]
