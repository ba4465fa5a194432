"""Pipelines by name, and ``load_pipeline``."""

import os
from collections.abc import Sequence

import torch

from fastltx.pipelines.base import Pipeline
from fastltx.pipelines.components import Components, ModelFiles
from fastltx.pipelines.distilled import DistilledPipeline
from fastltx.pipelines.guided import OneStagePipeline, TwoStageHQPipeline, TwoStagePipeline
from fastltx.pipelines.a2v import AudioToVideoPipeline
from fastltx.pipelines.ic_lora import ICLoraPipeline
from fastltx.pipelines.keyframes import KeyframesPipeline
from fastltx.pipelines.retake import RetakePipeline
from fastltx.pipelines.request import ImageInput, InputError
from fastltx.pipelines.request import VideoInput
from fastltx.pipelines.result import GenerationResult

PIPELINES: dict[str, type[Pipeline]] = {
    "one-stage": OneStagePipeline,
    "two-stage": TwoStagePipeline,
    "two-stage-hq": TwoStageHQPipeline,
    "distilled": DistilledPipeline,
    "ic-lora": ICLoraPipeline,
    "keyframes": KeyframesPipeline,
    "a2v": AudioToVideoPipeline,
    "retake": RetakePipeline,
}
NEEDS = {  # pipeline -> (upsampler, distilled LoRA for the second stage)
    "one-stage": (False, False),
    "two-stage": (True, True),
    "two-stage-hq": (True, True),
    "distilled": (True, False),
    "ic-lora": (True, False),  # the IC-LoRAs come as loras=[(path, strength)]
    "keyframes": (True, True),
    "a2v": (True, True),
    "retake": (False, False),
}


def load_pipeline(name: str, checkpoint: str | os.PathLike, text_encoder: str | os.PathLike | None = None,
                  upsampler: str | os.PathLike | None = None,
                  distilled_lora: tuple[str | os.PathLike, float] | str | os.PathLike | None = None,
                  loras: Sequence[tuple[str | os.PathLike, float]] = (), device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.bfloat16, attention_backend: str | None = None,
                  compile: bool = False, fp8: bool = False, world_size: int | None = None, world=None,
                  memory: str | int = "auto", cuda_graphs: bool = False, sequence_exchange: str = "auto") -> Pipeline:
    """A pipeline by name over local official files. Models load on first use and stay loaded.

    Several GPUs: start one process per GPU with ``torchrun --nproc_per_node N script.py`` and pass
    ``world_size=N`` (or a ``World`` from ``fastltx.runtime.distributed.init_distributed``); every
    process then calls the pipeline with the same arguments, and only rank 0 gets the result (the
    others get None). Guidance passes and video tokens are split over the processes.

    ``compile`` compiles the transformer blocks on first use (about 10 s at full size on an H100,
    ~20% faster steps); ``fp8`` stores the block linears in float8 (compiled on Ada / Hopper GPUs:
    fp8 matmuls; otherwise the weights dequantised for bf16 matmuls, where unfused activation
    quantisation would cost more than it saves).

    ``memory``: "auto" (default: fit the device's usable memory, planned per call), "full" (every
    model resident, nothing moved), or a budget such as "24g" / "16g": models then take turns on the
    device by stage, the transformer may run with fp8 weights, and layers that do not fit stream from
    host memory (fastltx.runtime.memory). A request that cannot fit fails before loading, naming the
    stage, the memory it needs and the setting that would fit.

    ``cuda_graphs`` (memory "full", a CUDA device) runs the transformer blocks of passes up to 2,048
    tokens a process through CUDA graphs, recorded at a shape's second step and replayed after: the
    host launches one graph a step (with several processes, one between each two collectives)
    instead of every kernel, which helps where the host is the bottleneck (H100, the compiled fp8
    distilled pipeline at 512x768: 1858 -> 1688 ms a call; 4 GPUs at 768x1280: stage 1 624-736 ms
    against 991-1334 ms plain; docs/benchmarks.md).

    ``sequence_exchange`` (several processes): how the self-attention over split video tokens
    exchanges them: "auto" (default: "push" on 2 GPUs with peer access, "keys" on 2 others, "heads"
    on more where they divide the video heads, else "keys"), "heads" (Ulysses all-to-alls), "keys"
    (keys and values all-gathered through NCCL) or "push" (the same pushed into the peers' memory
    while the queries are projected; fastltx/layers/sequence_parallel.py). Where CUDA symmetric
    memory cannot be made, "auto" warns and takes "keys"; a named "push" raises at its first
    exchange. A named "heads" where the GPUs do not divide the video heads pads them with phantom
    heads."""
    if name not in PIPELINES:
        raise InputError(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINES)}")
    if isinstance(distilled_lora, (str, os.PathLike)):
        distilled_lora = (distilled_lora, 1.0)
    files = ModelFiles(str(checkpoint), None if text_encoder is None else str(text_encoder),
                       None if upsampler is None else str(upsampler), tuple((str(p), float(s)) for p, s in loras),
                       () if distilled_lora is None else ((str(distilled_lora[0]), float(distilled_lora[1])),))
    needs_upsampler, needs_lora = NEEDS[name]
    files.check(needs_upsampler, needs_lora, name)
    if world is None and world_size is not None and world_size > 1:
        from fastltx.runtime.distributed import init_distributed
        try:
            world = init_distributed(world_size, device)
        except ValueError as e:
            raise InputError(str(e)) from None
    if world is not None:
        device = world.device
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    components = Components(files, device, dtype, attention_backend, compile, fp8, world, memory, cuda_graphs,
                            sequence_exchange)
    return PIPELINES[name](components)


__all__ = ["Components", "GenerationResult", "ImageInput", "InputError", "ModelFiles", "PIPELINES", "Pipeline",
           "load_pipeline"]
__all__ += ["VideoInput"]
