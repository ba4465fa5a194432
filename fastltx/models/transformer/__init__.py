"""The audio-video diffusion transformer: config, inputs, model and loading from a checkpoint."""

import os
from collections.abc import Sequence

import torch

from fastltx.checkpoint.loading import ComponentReader, open_component
from fastltx.checkpoint.lora import fuse_loras, read_lora
from fastltx.checkpoint.safetensors_file import CheckpointError, read_header
from fastltx.models.transformer.config import StreamGeometry, TransformerConfig
from fastltx.models.transformer.inputs import ModalityInput, Perturbation, Skip
from fastltx.models.transformer.model import LTXTransformer, fp8_linear

PREFIX = "model.diffusion_model."
# The text connectors share the transformer's prefix in official files; they belong to the text path.
_NOT_TRANSFORMER = ("video_embeddings_connector.", "audio_embeddings_connector.")


def checkpoint_key(file_key: str) -> str | None:
    """File key -> transformer state-dict key (None for keys of other components)."""
    if not file_key.startswith(PREFIX):
        return None
    key = file_key[len(PREFIX):]
    return None if key.startswith(_NOT_TRANSFORMER) else key


def open_transformer(path: str | os.PathLike, video: bool = True, audio: bool = True) -> ComponentReader:
    """The transformer of an official checkpoint built on meta and checked strictly against the file
    (nothing read yet); see ``load_transformer`` for ``video`` / ``audio``."""
    header = read_header(path)
    config = header.config()
    has_audio = f"{PREFIX}audio_patchify_proj.weight" in header.tensors
    if audio and not has_audio:
        raise CheckpointError(path, "the transformer has no audio stream; load it with audio=False")
    full = TransformerConfig.from_checkpoint_config(config, header.path, audio_video=has_audio)
    cfg = full.with_modalities(video, audio)
    ignored = lambda key: False  # noqa: E731
    if cfg != full:  # a single stream out of an audio-video file: skip the keys only the full model has
        with torch.device("meta"):
            own = set(LTXTransformer(cfg).state_dict())
            extra = set(LTXTransformer(full).state_dict()) - own
        ignored = extra.__contains__
    return open_component(lambda: LTXTransformer(cfg), header, checkpoint_key, "transformer", ignored)


def load_transformer(path: str | os.PathLike, device: torch.device | str = "cpu",
                     dtype: torch.dtype | None = torch.bfloat16, video: bool = True, audio: bool = True,
                     attention_backend: str | None = None,
                     loras: Sequence[tuple[str | os.PathLike, float]] = ()) -> LTXTransformer:
    """Load the transformer of an official checkpoint strictly.

    ``video=False`` or ``audio=False`` gives a single-stream model from an audio-video file (the
    other stream's tensors are then ignored); a video-only file needs ``audio=False``.
    ``loras``: (path, strength) pairs fused into the weights while loading.
    """
    lora_weights = [(read_lora(p), float(s)) for p, s in loras]  # validate before the big read
    reader = open_transformer(path, video, audio)
    fuse = (lambda state: fuse_loras(state, lora_weights)) if lora_weights else None  # noqa: E731
    model = reader.load(device, dtype, fuse)
    model.set_attention_backend(attention_backend)
    return model


__all__ = ["LTXTransformer", "ModalityInput", "Perturbation", "Skip", "StreamGeometry", "TransformerConfig",
           "checkpoint_key", "fp8_linear", "load_transformer", "open_transformer"]
