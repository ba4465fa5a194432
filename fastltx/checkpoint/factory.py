"""The tiny-model factory: random, seeded, deterministic weights in the official single-file layout.

Tests, benchmarks (full size, on the GPU) and the demo all use it, so a tiny random model and the
released 19B checkpoint go through the same loading path. Weights are stored in bf16 (as the
official files are, and as LoRA fusion needs); files are written atomically.
"""

import json
import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from fastltx.checkpoint.tiny_audio import audio_vae_part, vocoder_part
from fastltx.layers.rope import RopeLayout
from fastltx.models.text_encoder.tiny import connector_keys, text_connectors_part, text_projection_part
from fastltx.models.transformer import PREFIX as TRANSFORMER_PREFIX
from fastltx.models.transformer import LTXTransformer, StreamGeometry, TransformerConfig
from fastltx.models.video_vae.layouts import vae_part

VERSIONS = ("v1", "v2")
MODEL_VERSION = {"v1": "2.0.0", "v2": "2.3.0"}

# The released LTX-2 19B transformer section (see the reference notes, section 1.0).
_19B = dict(num_layers=48, video=(32, 128), audio=(32, 64), caption_channels=3840)
_TINY = dict(num_layers=2, video=(2, 16), audio=(2, 8), caption_channels=24)
CONNECTOR_19B = dict(connector_num_attention_heads=30, connector_attention_head_dim=128, connector_num_layers=2,
                     connector_num_learnable_registers=128, connector_positional_embedding_max_pos=[4096])
CONNECTOR_TINY = dict(connector_num_attention_heads=2, connector_attention_head_dim=12, connector_num_layers=1,
                      connector_num_learnable_registers=16, connector_positional_embedding_max_pos=[4096])
SIZES = {"tiny": (_TINY, CONNECTOR_TINY), "19b": (_19B, CONNECTOR_19B)}


def transformer_config(version: str = "v1", size: str = "tiny", num_layers: int | None = None) -> TransformerConfig:
    """A transformer configuration with LTX-2 ("v1") or LTX-2.3 ("v2") numerics at a given size.

    "19b" is the released LTX-2 geometry; with "v2" it carries the LTX-2.3 switches on that geometry
    (the 22B geometry is not recorded here yet).
    """
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    geo = SIZES[size][0]
    (vh, vd), (ah, ad) = geo["video"], geo["audio"]
    v2 = version == "v2"
    return TransformerConfig(
        video=StreamGeometry(vh, vd, 128, 128, vh * vd, (20.0, 2048.0, 2048.0)),
        audio=StreamGeometry(ah, ad, 128, 128, ah * ad, (20.0,)),
        num_layers=num_layers or geo["num_layers"], norm_eps=1e-6, theta=10000.0, timestep_scale_multiplier=1000.0,
        av_ca_timestep_scale_multiplier=1000.0, rope_layout=RopeLayout.SPLIT, rope_float64=True,
        gated_attention=v2, cross_attention_adaln=v2, caption_channels=None if v2 else geo["caption_channels"])


def iter_random_state(model: nn.Module, seed: int, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.bfloat16):
    """``random_state``'s tensors one at a time, as ``(name, tensor)`` (the caller may move each away
    before the next is made: full-size models generated on a GPU need not fit it at once)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, ref in model.state_dict().items():
        t = torch.randn(ref.shape, generator=gen, device=device, dtype=torch.float32)
        leaf = name.rsplit(".", 1)[-1]
        if "norm" in name and leaf == "weight":
            t = 1 + 0.1 * t
        elif leaf == "weight" and t.ndim >= 2:
            t = t / (t[0].numel() ** 0.5)
        elif leaf == "bias":
            t = 0.02 * t
        else:
            t = 0.1 * t
        yield name, t.to(dtype)


def random_state(model: nn.Module, seed: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Deterministic random tensors for every entry of ``model.state_dict()`` (which may be on meta).

    Linear weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2), norm weights ~ 1 + N(0, 0.1^2), AdaLN
    tables ~ N(0, 0.1^2): activations stay O(1) at any size and every path contributes.
    """
    return dict(iter_random_state(model, seed, device, dtype))


def random_transformer(cfg: TransformerConfig, seed: int = 0, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.bfloat16) -> LTXTransformer:
    """A random transformer built in memory (full-size benchmarks do not write 38 GB files)."""
    with torch.device("meta"):
        model = LTXTransformer(cfg)
    model.load_state_dict(random_state(model, seed, device, dtype), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write a safetensors file atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict,
                     model_version: str | None = None) -> Path:
    """Write a single-file checkpoint: tensors plus the ``config`` (and ``model_version``) metadata."""
    metadata = {"config": json.dumps(config)}
    if model_version:
        metadata["model_version"] = model_version
    return save_safetensors(path, tensors, metadata)


@dataclass(frozen=True)
class Part:
    """One component's share of a single-file checkpoint.

    ``config``: the header config sections it contributes (e.g. ``{"transformer": {...}}``);
    ``modules``: key prefix -> module (on meta is fine) whose state dict is stored under that prefix;
    ``adjust``: optional (key, random tensor) -> tensor, for values that must obey a constraint
    (e.g. positive standard deviations).
    """

    config: dict
    modules: dict[str, nn.Module]
    adjust: Callable[[str, torch.Tensor], torch.Tensor] | None = None


def transformer_part(version: str, size: str, num_layers: int | None = None, audio: bool = True) -> Part:
    cfg = transformer_config(version, size, num_layers)
    if not audio:
        cfg = replace(cfg, audio=None)
    with torch.device("meta"):
        model = LTXTransformer(cfg)
    return Part({"transformer": cfg.to_checkpoint_section(connector_keys(version, size))}, {TRANSFORMER_PREFIX: model})


# Every component the single file can hold, in the order they are written. Later issues add theirs.
PARTS: dict[str, Callable[..., Part]] = {
    "transformer": transformer_part,
    "vae": vae_part,
    "text_projection": text_projection_part,
    "text_connectors": text_connectors_part,
    "audio_vae": audio_vae_part,
    "vocoder": vocoder_part,
}


def make_checkpoint(path: str | os.PathLike, version: str = "v1", seed: int = 0, size: str = "tiny",
                    parts: tuple[str, ...] | None = None, num_layers: int | None = None,
                    audio: bool = True) -> Path:
    """Write a random checkpoint in the official layout: ``config`` header and prefixed keys.

    ``parts`` picks components (default: all known); ``num_layers`` and ``audio=False`` (a
    video-only transformer) shape the transformer. Each part draws from its own seeded generator,
    so adding a component never changes another's weights.
    """
    names = tuple(PARTS) if parts is None else parts
    unknown = set(names) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown checkpoint parts {sorted(unknown)}; known: {sorted(PARTS)}")
    config, tensors = {}, {}
    for name in names:
        part = transformer_part(version, size, num_layers, audio) if name == "transformer" else PARTS[name](version, size)
        config.update(part.config)
        for i, (prefix, module) in enumerate(part.modules.items()):
            part_seed = (seed * 1_000_003 + zlib.crc32(f"{name}:{i}".encode())) % 2**63
            for key, t in random_state(module, part_seed).items():
                full = prefix + key
                tensors[full] = part.adjust(full, t) if part.adjust else t
    return write_checkpoint(path, tensors, config, MODEL_VERSION[version])


def make_lora(path: str | os.PathLike, version: str = "v1", seed: int = 0, rank: int = 4, size: str = "tiny",
              num_layers: int | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write a random LoRA in the official key format over every block linear of the transformer
    (gate logits aside). ``metadata`` adds header entries (e.g. IC-LoRA's reference_downscale_factor)."""
    with torch.device("meta"):
        model = LTXTransformer(transformer_config(version, size, num_layers))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in model.transformer_blocks.named_modules():
        if isinstance(module, nn.Linear) and "to_gate_logits" not in name:
            out_f, in_f = module.weight.shape
            key = f"diffusion_model.transformer_blocks.{name}"
            tensors[key + ".lora_A.weight"] = (torch.randn(rank, in_f, generator=gen) / in_f**0.5).to(torch.bfloat16)
            tensors[key + ".lora_B.weight"] = (torch.randn(out_f, rank, generator=gen) / rank**0.5).to(torch.bfloat16)
    return save_safetensors(path, tensors, metadata or {})
