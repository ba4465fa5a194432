"""The models a pipeline needs, loaded once per pipeline object and reused across calls."""

import functools
import os
from dataclasses import dataclass

import torch

from fastltx.checkpoint.lora import LoraSwitch, read_lora
from fastltx.pipelines.request import InputError
from fastltx.runtime.memory import concrete_device


@dataclass(frozen=True)
class ModelFiles:
    """Local paths of the official files. ``loras`` apply throughout (fused at load); ``stage2_loras``
    are switched in place per stage (the distilled LoRA of the two-stage dev pipelines), with the
    given strengths unless a pipeline asks for others."""

    checkpoint: str
    text_encoder: str | None = None
    upsampler: str | None = None
    loras: tuple[tuple[str, float], ...] = ()
    stage2_loras: tuple[tuple[str, float], ...] = ()

    def check(self, needs_upsampler: bool, needs_stage2_lora: bool, pipeline: str) -> None:
        """Fail before loading anything when a file is missing or the pipeline lacks one it needs."""
        named = [("checkpoint", self.checkpoint), ("text encoder", self.text_encoder), ("upsampler", self.upsampler)]
        named += [("LoRA", p) for p, _ in (*self.loras, *self.stage2_loras)]
        for what, path in named:
            if path is not None and not os.path.exists(path):
                raise InputError(f"{path}: the {what} does not exist")
        if self.text_encoder is None:
            raise InputError(f"the {pipeline} pipeline needs a Gemma 3 text encoder directory (text_encoder=...)")
        if needs_upsampler and self.upsampler is None:
            raise InputError(f"the {pipeline} pipeline needs a latent upsampler file (upsampler=...)")
        if needs_stage2_lora and not self.stage2_loras:
            raise InputError(f"the {pipeline} pipeline needs the distilled LoRA for its second stage "
                             "(distilled_lora=...)")


def check_cuda_graphs(device: torch.device, memory) -> None:
    """CUDA graphs of the transformer blocks need a CUDA device and memory "full" (the graphs keep
    their activations' memory, which the plans do not count); an InputError otherwise. With several
    processes the collectives run between graph pieces (fastltx.runtime.cuda_graph)."""
    if device.type != "cuda" or not memory.full:
        raise InputError(f"CUDA graphs need a CUDA device and memory 'full' (every model resident), got device "
                         f"{device} and memory {memory.name!r}")


class Components:
    """``compile``: torch.compile of the transformer blocks (one graph shared by all blocks);
    ``fp8``: the block linears in float8 e4m3 (scaled fp8 matmuls when compiled on Ada / Hopper
    GPUs, else the weights dequantised for bf16 matmuls; not together with stage-2 LoRAs, which are
    switched on the bf16 weights); ``memory``: "auto", "full", "24g",
    "16g", ... (fastltx.runtime.memory: which models stay on the device, which come in per stage,
    which stream their layers; every model access goes through it, see pipelines/memory.py);
    ``cuda_graphs``: the transformer blocks through CUDA graphs (``LTXTransformer.graph_blocks``: the
    host launches one graph a step, or with several processes one graph between each two collectives;
    for host-bound steps: compiled fp8 at ~1.5k tokens, a split step at ~1k tokens a GPU), see
    ``check_cuda_graphs`` for where they are offered."""

    def __init__(self, files: ModelFiles, device: torch.device | str, dtype: torch.dtype,
                 attention_backend: str | None = None, compile: bool = False, fp8: bool = False, world=None,
                 memory="auto", cuda_graphs: bool = False, sequence_exchange: str = "auto"):
        self.files, self.dtype, self.attention_backend = files, dtype, attention_backend
        from fastltx.layers.sequence_parallel import check_exchange
        try:  # how several processes' self-attention exchanges the split tokens
            self.sequence_exchange = check_exchange(sequence_exchange)
        except ValueError as e:
            raise InputError(str(e)) from None
        device = torch.device(device)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.type == "cuda" and (device.index or 0) >= gpus:
            raise InputError(f"device {device} asked for, but {gpus} CUDA device(s) are available here")
        self.device = concrete_device(device)  # "cuda" -> "cuda:N", as its tensors report it
        # a fastltx.runtime.distributed.World of several processes, or None (one process)
        self.world = world if world is not None and world.size > 1 else None
        self.compile, self.fp8 = compile, fp8
        if fp8 and files.stage2_loras:
            raise InputError("fp8 cannot be combined with a stage-2 (distilled) LoRA yet: fuse it at load with loras=")
        self._switch: LoraSwitch | None = None
        from fastltx.pipelines.memory import ModelMemory
        try:
            self.memory = ModelMemory(self, memory)
        except ValueError as e:
            raise InputError(str(e)) from None
        if cuda_graphs:
            check_cuda_graphs(self.device, self.memory.setting)
        self.cuda_graphs = cuda_graphs

    MODELS = ("text_encoder", "_transformer", "video_encoder", "video_decoder", "audio_encoder", "audio_decoder",
              "vocoder", "upsampler", "_latent_statistics")

    def __getattribute__(self, name: str):
        if name in type(self).MODELS and "memory" in object.__getattribute__(self, "__dict__"):
            return object.__getattribute__(self, "memory").get(name)  # loads it, or brings it back
        return object.__getattribute__(self, name)

    @property
    def loaded(self) -> list[str]:
        """The models on the device now (moved-out ones keep their weights in host memory)."""
        return [name.lstrip("_") for name in self.MODELS
                if name in self.__dict__ and self.memory.on_device(name.lstrip("_"))]

    @functools.cached_property
    def audio_config(self):
        """The audio VAE's configuration, from the checkpoint header (no weights read)."""
        from fastltx.checkpoint.safetensors_file import read_header
        from fastltx.models.audio_vae import AudioVAEConfig
        header = read_header(self.files.checkpoint)
        return AudioVAEConfig.from_checkpoint_config(header.config(), header.path)

    @functools.cached_property
    def audio_latent(self) -> tuple[int, int]:
        """(channels, mel bins) of the audio latent, from the checkpoint header (no weights read)."""
        return self.audio_config.z_channels, self.audio_config.latent_mel_bins

    @functools.cached_property
    def video_latent_channels(self) -> int:
        return self._transformer.cfg.video.in_channels

    @functools.cached_property
    def text_encoder(self):
        return self.memory.load_text_encoder()  # in the memory plan's form

    @functools.cached_property
    def _transformer(self):
        model = self.memory.load_transformer()  # in the memory plan's form (fp8 and streaming included)
        model.sequence_exchange = self.sequence_exchange
        if self.files.stage2_loras:
            self._switch = LoraSwitch(model, [read_lora(p) for p, _ in self.files.stage2_loras], self.device)
        if self.compile:
            from fastltx.runtime.compile import compile_blocks
            compile_blocks(model)
        if self.cuda_graphs:
            model.graph_blocks()
        return model

    def transformer(self, stage2_strengths: tuple[float, ...] | None = None):
        """The transformer with the stage-2 LoRAs at ``stage2_strengths`` (None: without them)."""
        model = self._transformer
        if self._switch is not None:
            self._switch.set(stage2_strengths)
            self.memory.weights_changed("transformer")
        elif stage2_strengths is not None:
            raise ValueError("no stage-2 LoRA was given to this pipeline")
        if self.world is not None:  # calls split the video tokens over the world's processes
            from fastltx.models.transformer.sharding import SequenceParallel
            return SequenceParallel(model, self.world)
        return model

    @property
    def stage2_strengths(self) -> tuple[float, ...]:
        """The strengths the stage-2 LoRAs were given with."""
        return tuple(s for _, s in self.files.stage2_loras)

    @functools.cached_property
    def video_encoder(self):
        from fastltx.models.video_vae import load_video_encoder
        return load_video_encoder(self.files.checkpoint, self.device, self.dtype)

    @property
    def latent_statistics(self):
        """The video VAE's per-channel latent statistics (the encoder's when it is loaded, else alone)."""
        if "video_encoder" in self.__dict__:
            return self.video_encoder.per_channel_statistics
        return self._latent_statistics

    @functools.cached_property
    def _latent_statistics(self):
        from fastltx.models.video_vae import load_latent_statistics
        return load_latent_statistics(self.files.checkpoint, self.device, self.dtype)

    @functools.cached_property
    def video_decoder(self):
        from fastltx.models.video_vae import load_video_decoder
        return load_video_decoder(self.files.checkpoint, self.device, self.dtype)

    @functools.cached_property
    def audio_encoder(self):
        from fastltx.models.audio_vae import load_audio_encoder
        return load_audio_encoder(self.files.checkpoint, self.device, self.dtype)

    @functools.cached_property
    def audio_decoder(self):
        from fastltx.models.audio_vae import load_audio_decoder
        return load_audio_decoder(self.files.checkpoint, self.device, self.dtype)

    @functools.cached_property
    def vocoder(self):
        from fastltx.models.vocoder import load_vocoder
        return load_vocoder(self.files.checkpoint, self.device, self.dtype)

    @functools.cached_property
    def upsampler(self):
        from fastltx.models.upsampler import load_latent_upsampler
        return load_latent_upsampler(self.files.upsampler, self.device, self.dtype)
