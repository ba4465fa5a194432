"""Gemma 3 from a local Hugging Face directory, through transformers' own classes.

Only the language model is built and read (``Gemma3TextModel``: no vision tower, no lm_head, which
the reference needs only for prompt enhancement). The directory is checked first (a Gemma 3 config,
a tokenizer, safetensors weights), then the weights are matched strictly against the model and
read; vision-tower and projector tensors are never read.

Weight layouts read: the official ``gemma-3-*-it`` files (``language_model.model.*``), directories
saved by recent transformers (``model.language_model.*``), and text-only Gemma 3 (``model.*``).

Tokenisation is the reference's: the prompt is stripped, special tokens are those the Hugging Face
Gemma tokenizer adds by default (BOS), padding on the left to ``max_length`` (1024), truncation,
the EOS token as padding if the tokenizer has none.

transformers is imported when a model is loaded, not when this module is: it takes seconds.
"""

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastltx.checkpoint.loading import ComponentReader, match_keys
from fastltx.checkpoint.mapped import MappedFile
from fastltx.checkpoint.safetensors_file import CheckpointError, SafetensorsHeader, read_header
from fastltx.models.text_encoder.config import GemmaGeometry

MAX_LENGTH = 1024
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
# Language-model key prefixes per config model_type (first match wins); other keys are not ours.
LANGUAGE_MODEL_PREFIXES = {"gemma3": ("language_model.model.", "model.language_model."), "gemma3_text": ("model.",)}


@dataclass(frozen=True)
class GemmaDirectory:
    """A checked Gemma 3 directory: config, tokenizer location and weight files (nothing read yet)."""

    path: Path
    model_type: str
    config: dict  # config.json as written
    tokenizer_dir: Path
    weight_files: tuple[Path, ...]

    @functools.cached_property
    def text_config(self):
        """transformers' Gemma 3 text config, defaults filled in (reads config.json only)."""
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(str(self.path), local_files_only=True)
        return config.get_text_config() if self.model_type == "gemma3" else config

    @property
    def geometry(self) -> GemmaGeometry:
        return GemmaGeometry(hidden=self.text_config.hidden_size, layers=self.text_config.num_hidden_layers)


def read_gemma_directory(path: str | os.PathLike) -> GemmaDirectory:
    """Check a Gemma 3 directory; every problem is a CheckpointError naming the directory."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(path, "not a directory (the text encoder is a Hugging Face Gemma 3 directory)")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise CheckpointError(path, "no config.json: not a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(path, f"config.json is not valid JSON ({e})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in LANGUAGE_MODEL_PREFIXES:
        raise CheckpointError(path, f"config.json describes a {model_type!r} model, not Gemma 3 "
                                    f"(model_type 'gemma3' or 'gemma3_text')")
    if model_type == "gemma3" and not isinstance(config.get("text_config"), dict):
        raise CheckpointError(path, "config.json of a Gemma 3 model has no text_config")
    return GemmaDirectory(root, model_type, config, _tokenizer_dir(root), _weight_files(root))


def _tokenizer_dir(root: Path) -> Path:
    for name in TOKENIZER_FILES:
        if (root / name).is_file():
            return root
    for name in TOKENIZER_FILES:  # as the reference, a tokenizer in a sub-directory is found too
        found = sorted(root.rglob(name))
        if found:
            return found[0].parent
    raise CheckpointError(root, f"no tokenizer: neither {' nor '.join(TOKENIZER_FILES)} in the directory")


def _weight_files(root: Path) -> tuple[Path, ...]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise CheckpointError(root, f"{index.name} has no valid weight_map") from None
        missing = [n for n in names if not (root / n).is_file()]
        if missing:
            raise CheckpointError(root, f"weight shard(s) listed in {index.name} are missing: {', '.join(missing)}")
        return tuple(root / n for n in names)
    files = tuple(sorted(root.glob("*.safetensors")))
    if not files:
        raise CheckpointError(root, "no safetensors weights (model.safetensors or an index with shards)")
    return files


def load_tokenizer(path: str | os.PathLike, max_length: int = MAX_LENGTH) -> Any:
    """The Hugging Face tokenizer in ``path``, set up as the reference sets it (left padding, EOS as pad
    if there is no pad token)."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, model_max_length=max_length)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _key_map(model_type: str):
    prefixes = LANGUAGE_MODEL_PREFIXES[model_type]

    def key(file_key: str) -> str | None:
        for prefix in prefixes:
            if file_key.startswith(prefix):
                return file_key[len(prefix):]
        return None
    return key


@contextlib.contextmanager
def parameters_on_meta():
    """Build modules with their parameters on the meta device and their buffers real.

    transformers computes non-persistent buffers (rotary frequencies, the embedding scale) in the
    constructor; this keeps them while parameters cost nothing until the checkpoint's are assigned.
    """
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def build_language_model(text_config, state: dict[str, torch.Tensor] | None = None,
                         device: torch.device | str = "cpu") -> nn.Module:
    """transformers' Gemma3TextModel with parameters on meta, or with ``state`` assigned (strictly)."""
    from transformers import Gemma3TextModel
    with parameters_on_meta():
        model = Gemma3TextModel(text_config)
    if state is not None:
        assign_weights(model, state, device)
    return model.eval().requires_grad_(False)


def assign_weights(model: nn.Module, state: dict[str, torch.Tensor], device: torch.device | str) -> None:
    """Assign every parameter (strict), move the buffers to ``device``; never leave a meta tensor."""
    model.load_state_dict(state, strict=True, assign=True)
    model.to(device)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # only a transformers change could get here; never hand out such a model
        raise RuntimeError(f"Gemma 3 language model: tensors left uninitialised: {', '.join(left[:5])}")


def open_language_model(directory: GemmaDirectory) -> ComponentReader:
    """The language model built with parameters on meta, every weight file's keys matched against it
    strictly; nothing read yet (vision-tower and projector tensors are never read)."""
    model = build_language_model(directory.text_config)
    tensors, where = {}, {}
    headers = [read_header(file) for file in directory.weight_files]
    for file, header in zip(directory.weight_files, headers):
        for name, info in header.tensors.items():
            if name in where:
                raise CheckpointError(directory.path, f"tensor {name} is in both {where[name].name} and {file.name}")
            tensors[name], where[name] = info, file
    merged = SafetensorsHeader(str(directory.path), tensors, {})
    mapping = match_keys(merged, model, _key_map(directory.model_type), "Gemma 3 language model")
    mapped = {file: MappedFile(header) for file, header in zip(directory.weight_files, headers)
              if any(where[n] == file for n in mapping.values())}
    return ComponentReader(model, {key: (mapped[where[name]], name) for key, name in mapping.items()},
                           "Gemma 3 language model", str(directory.path))


class GemmaEncoder(nn.Module):
    """Tokenizer + Gemma 3 language model -> all hidden states of a batch of prompts."""

    def __init__(self, language_model: nn.Module, tokenizer: Any, max_length: int = MAX_LENGTH):
        super().__init__()
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def geometry(self) -> GemmaGeometry:
        c = self.language_model.config
        return GemmaGeometry(c.hidden_size, c.num_hidden_layers)

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layers (run in order, once per forward): what can be streamed."""
        return self.language_model.layers

    @property
    def host_parts(self) -> list[nn.Module]:
        """Parts that may run from host memory when the model streams: the token embedding (2 GiB
        for Gemma 3 12B's 262k-token vocabulary), of which a prompt reads a few rows."""
        return [self.language_model.embed_tokens]

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, mask), both (B, max_length) int64 on the model's device; left-padded."""
        if isinstance(prompts, str):
            raise TypeError("give a list of prompts")
        encoded = self.tokenizer([p.strip() for p in prompts], padding="max_length", max_length=self.max_length,
                                 truncation=True, return_tensors="pt")
        device = self.language_model.norm.weight.device  # where the layers run (the embedding may be on the host)
        return encoded.input_ids.to(device), encoded.attention_mask.to(device)

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """All hidden states stacked layer-minor: (B, T, hidden, layers + 1).

        Entry 0 is the (scaled) embedding output, entry l the output of layer l, the last one after
        the final norm (transformers' ``output_hidden_states``).
        """
        out = self.language_model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True,
                                  use_cache=False)
        states = out.hidden_states
        del out
        return torch.stack(states, dim=-1)


def load_gemma(path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.bfloat16,
               max_length: int = MAX_LENGTH, directory: GemmaDirectory | None = None) -> GemmaEncoder:
    """Tokenizer and language model of a local Gemma 3 directory (checked first, then read strictly)."""
    directory = directory or read_gemma_directory(path)
    tokenizer = load_tokenizer(directory.tokenizer_dir, max_length)
    model = open_language_model(directory).load(device, dtype).to(device)  # .to: the computed buffers
    return GemmaEncoder(model, tokenizer, max_length)
