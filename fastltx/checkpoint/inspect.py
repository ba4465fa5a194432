"""What a checkpoint holds: model version and, per component, tensor count, parameters and dtypes.

Only the header is read (no tensor data), so inspecting a 40 GB file is instant.
"""

import os
from collections import defaultdict
from dataclasses import dataclass

from fastltx.checkpoint.safetensors_file import CheckpointError, SafetensorsHeader, read_header
from fastltx.models.transformer import PREFIX as TRANSFORMER_PREFIX
from fastltx.models.transformer import TransformerConfig

# (component, key prefix) in official single files; the first matching prefix wins.
COMPONENTS = (
    ("text connector (video)", TRANSFORMER_PREFIX + "video_embeddings_connector."),
    ("text connector (audio)", TRANSFORMER_PREFIX + "audio_embeddings_connector."),
    ("transformer", TRANSFORMER_PREFIX),
    ("text feature projection", "text_embedding_projection."),
    ("video VAE encoder", "vae.encoder."),
    ("video VAE decoder", "vae.decoder."),
    ("video VAE statistics", "vae.per_channel_statistics."),
    ("audio VAE encoder", "audio_vae.encoder."),
    ("audio VAE decoder", "audio_vae.decoder."),
    ("audio VAE statistics", "audio_vae.per_channel_statistics."),
    ("vocoder", "vocoder."),
)
_DTYPES = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F64": "fp64", "F8_E4M3": "fp8_e4m3",
           "F8_E5M2": "fp8_e5m2", "I64": "int64", "I32": "int32", "U8": "uint8", "BOOL": "bool"}


@dataclass(frozen=True)
class ComponentSummary:
    name: str
    tensors: int
    parameters: int
    dtypes: tuple[str, ...]


def component_of(key: str) -> str:
    if ".lora_A." in key or ".lora_B." in key:
        return "LoRA"
    for name, prefix in COMPONENTS:
        if key.startswith(prefix):
            return name
    return "other"


def summarize(header: SafetensorsHeader) -> list[ComponentSummary]:
    counts, params, dtypes = defaultdict(int), defaultdict(int), defaultdict(set)
    for key, info in header.tensors.items():
        name = component_of(key)
        counts[name] += 1
        params[name] += info.numel
        dtypes[name].add(_DTYPES.get(info.dtype, info.dtype))
    order = [n for n, _ in COMPONENTS] + ["LoRA", "other"]
    return [ComponentSummary(n, counts[n], params[n], tuple(sorted(dtypes[n]))) for n in order if n in counts]


def describe_version(header: SafetensorsHeader) -> str:
    stated = header.metadata.get("model_version")
    try:
        config = header.config()
    except CheckpointError:
        config = {}
    numerics = ""
    if isinstance(config.get("transformer"), dict):
        has_audio = f"{TRANSFORMER_PREFIX}audio_patchify_proj.weight" in header.tensors
        cfg = TransformerConfig.from_checkpoint_config(config, header.path, audio_video=has_audio)
        family = "LTX-2" if cfg.version == "V1" else "LTX-2.3"
        streams = "audio-video" if cfg.audio is not None else "video-only"
        numerics = (f"{family} ({cfg.version} numerics), {streams}, {cfg.num_layers} blocks, "
                    f"video {cfg.video.heads}x{cfg.video.head_dim}, rope {cfg.rope_layout.value}"
                    + (", float64 grid" if cfg.rope_float64 else ""))
    if stated and numerics:
        return f"{stated}: {numerics}"
    return stated or numerics or "unknown (no model_version metadata and no transformer config)"


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3f} {unit}"
    return str(n)


def inspect_checkpoint(path: str | os.PathLike) -> str:
    """A short human-readable report of a checkpoint (raises CheckpointError for unusable files)."""
    header = read_header(path)
    rows = summarize(header)
    lines = [f"{header.path}", f"model version: {describe_version(header)}",
             f"{'component':<26}{'tensors':>8}{'parameters':>15}  dtype"]
    for r in rows:
        lines.append(f"{r.name:<26}{r.tensors:>8}{_human(r.parameters):>15}  {', '.join(r.dtypes)}")
    total = sum(r.parameters for r in rows)
    lines.append(f"{'total':<26}{sum(r.tensors for r in rows):>8}{_human(total):>15}")
    return "\n".join(lines)
