"""The video VAE's configuration, read from ``config["vae"]`` of an official checkpoint.

The block lists are required (without them there is no model); the other keys take the
reference's defaults when absent, including its one trap: a single key, ``spatial_padding_mode``,
sets both halves, and when it is absent the encoder pads with zeros and the decoder reflects.
Layouts the reference cannot build or run (2-D VAEs, group norm, ``attn_res_x``, log-variance
"none", noise injection on a channel-changing block) are refused with a clear error.
"""

from dataclasses import dataclass

from fastltx.checkpoint.safetensors_file import CheckpointError
from fastltx.layers.conv import PADDING_MODES

# Encoder blocks and the stride each one compresses by (None: no compression).
ENCODER_BLOCKS = {
    "res_x": None, "res_x_y": None,
    "compress_time": (2, 1, 1), "compress_space": (1, 2, 2), "compress_all": (2, 2, 2), "compress_all_x_y": (2, 2, 2),
    "compress_time_res": (2, 1, 1), "compress_space_res": (1, 2, 2), "compress_all_res": (2, 2, 2),
}
# Decoder blocks and the stride each one expands by.
DECODER_BLOCKS = {"res_x": None, "res_x_y": None,
                  "compress_time": (2, 1, 1), "compress_space": (1, 2, 2), "compress_all": (2, 2, 2)}
# Channel multiplier when a block's parameters do not give one.
_DEFAULT_MULTIPLIER = {"res_x_y": 2, "compress_all_x_y": 2, "compress_time_res": 2, "compress_space_res": 2,
                       "compress_all_res": 2}
LOG_VARIANCE_CHANNELS = {"uniform": lambda c: c + 1, "constant": lambda c: c + 1, "per_channel": lambda c: 2 * c}


@dataclass(frozen=True)
class Block:
    """One entry of a block list: ``res_x`` stacks ``num_layers`` resnets; ``compress_*`` change scale;
    ``multiplier`` multiplies the width in the encoder and divides it in the decoder."""

    kind: str
    num_layers: int = 1
    multiplier: int = 1
    residual: bool = False
    inject_noise: bool = False

    def to_entry(self) -> list:
        """The ``[name, params]`` pair an official header spells for this block."""
        if self.kind == "res_x":
            params = {"num_layers": self.num_layers}
            if self.inject_noise:
                params["inject_noise"] = True
        else:
            params = {"multiplier": self.multiplier}
            if self.residual:
                params["residual"] = True
            if self.inject_noise:
                params["inject_noise"] = True
        return [self.kind, params]


def _scale(blocks, table) -> tuple[int, int]:
    """(temporal, spatial) factor of a block list."""
    t = s = 1
    for b in blocks:
        stride = table[b.kind]
        if stride is not None:
            t, s = t * stride[0], s * stride[1]
    return t, s


@dataclass(frozen=True)
class EncoderConfig:
    blocks: tuple[Block, ...]
    in_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4
    latent_log_var: str = "uniform"
    spatial_padding_mode: str = "zeros"

    @property
    def temporal_factor(self) -> int:
        return _scale(self.blocks, ENCODER_BLOCKS)[0]

    @property
    def spatial_factor(self) -> int:
        return _scale(self.blocks, ENCODER_BLOCKS)[1] * self.patch_size

    @classmethod
    def from_checkpoint_config(cls, config: dict, path: str) -> "EncoderConfig":
        v = _vae_section(config, path)
        return cls(blocks=_blocks(v, "encoder_blocks", ENCODER_BLOCKS, path, encoder=True),
                   in_channels=_int(v, "in_channels", 3, path), latent_channels=_int(v, "latent_channels", 128, path),
                   patch_size=_int(v, "patch_size", 4, path), latent_log_var=_log_var(v, path),
                   spatial_padding_mode=_padding(v, "zeros", path))


@dataclass(frozen=True)
class DecoderConfig:
    blocks: tuple[Block, ...]  # in header order; the decoder runs them reversed
    out_channels: int = 3
    latent_channels: int = 128
    patch_size: int = 4
    base_channels: int = 128
    causal: bool = False
    timestep_conditioning: bool = True
    spatial_padding_mode: str = "reflect"

    @property
    def temporal_factor(self) -> int:
        return _scale(self.blocks, DECODER_BLOCKS)[0]

    @property
    def spatial_factor(self) -> int:
        return _scale(self.blocks, DECODER_BLOCKS)[1] * self.patch_size

    @classmethod
    def from_checkpoint_config(cls, config: dict, path: str) -> "DecoderConfig":
        v = _vae_section(config, path)
        blocks = _blocks(v, "decoder_blocks", DECODER_BLOCKS, path, encoder=False)
        for b in blocks:
            if b.kind == "res_x_y" and b.inject_noise and b.multiplier != 1:
                raise CheckpointError(path, "unsupported video VAE layout: decoder res_x_y with inject_noise "
                                            "(its noise scale has the input width; ltx-core cannot run it)")
        return cls(blocks=blocks, out_channels=_int(v, "out_channels", 3, path),
                   latent_channels=_int(v, "latent_channels", 128, path), patch_size=_int(v, "patch_size", 4, path),
                   base_channels=_int(v, "decoder_base_channels", 128, path),
                   causal=_bool(v, "causal_decoder", False, path),
                   timestep_conditioning=_bool(v, "timestep_conditioning", True, path),
                   spatial_padding_mode=_padding(v, "reflect", path))


@dataclass(frozen=True)
class VideoVAEConfig:
    """Both halves, as one header section describes them."""

    encoder: EncoderConfig
    decoder: DecoderConfig

    @classmethod
    def from_checkpoint_config(cls, config: dict, path: str) -> "VideoVAEConfig":
        return cls(EncoderConfig.from_checkpoint_config(config, path),
                   DecoderConfig.from_checkpoint_config(config, path))

    def to_checkpoint_section(self) -> dict:
        """The ``config["vae"]`` section of an official file with this configuration."""
        e, d = self.encoder, self.decoder
        if (e.in_channels, e.latent_channels, e.patch_size) != (d.out_channels, d.latent_channels, d.patch_size):
            raise ValueError("encoder and decoder disagree on channels or patch size; one header cannot say both")
        section = dict(dims=3, in_channels=e.in_channels, out_channels=d.out_channels,
                       latent_channels=e.latent_channels, patch_size=e.patch_size, norm_layer="pixel_norm", latent_log_var=e.latent_log_var,
                       encoder_blocks=[b.to_entry() for b in e.blocks], decoder_blocks=[b.to_entry() for b in d.blocks],
                       causal_decoder=d.causal, timestep_conditioning=d.timestep_conditioning,
                       decoder_base_channels=d.base_channels)
        modes = (e.spatial_padding_mode, d.spatial_padding_mode)
        if modes[0] == modes[1]:
            section["spatial_padding_mode"] = modes[0]
        elif modes != ("zeros", "reflect"):  # the only mixed pair a header can express: by leaving the key out
            raise ValueError(f"padding modes {modes} cannot be written to one header key")
        return section


def _vae_section(config: dict, path: str) -> dict:
    v = config.get("vae")
    if not isinstance(v, dict):
        raise CheckpointError(path, "the header config has no 'vae' section")
    dims = v.get("dims", 3)
    if dims != 3:
        raise CheckpointError(path, f"unsupported video VAE layout: dims={dims!r} (LTX-2 video VAEs are 3-D)")
    norm = v.get("norm_layer", "pixel_norm")
    if norm != "pixel_norm":
        raise CheckpointError(path, f"unsupported video VAE layout: norm_layer={norm!r} (expected 'pixel_norm')")
    return v


def _int(v: dict, key: str, default: int, path: str) -> int:
    value = v.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CheckpointError(path, f"vae config: {key} must be a positive integer, got {value!r}")
    return value


def _bool(v: dict, key: str, default: bool, path: str) -> bool:
    value = v.get(key, default)
    if not isinstance(value, bool):
        raise CheckpointError(path, f"vae config: {key} must be true or false, got {value!r}")
    return value


def _padding(v: dict, default: str, path: str) -> str:
    mode = v.get("spatial_padding_mode", default)
    if mode not in PADDING_MODES:
        raise CheckpointError(path, f"vae config: unknown spatial_padding_mode {mode!r} "
                                    f"(known: {', '.join(PADDING_MODES)})")
    return mode


def _log_var(v: dict, path: str) -> str:
    mode = v.get("latent_log_var", "uniform")
    if mode not in LOG_VARIANCE_CHANNELS:
        raise CheckpointError(path, f"unsupported video VAE layout: latent_log_var={mode!r} "
                                    f"(known: {', '.join(LOG_VARIANCE_CHANNELS)})")
    return mode


def _blocks(v: dict, key: str, table: dict, path: str, encoder: bool) -> tuple[Block, ...]:
    if key not in v:
        raise CheckpointError(path, f"vae config lacks the required key {key!r}")
    entries = v[key]
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(path, f"vae config: {key} must be a non-empty list of [name, params] pairs")
    side = "encoder" if encoder else "decoder"
    blocks = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str):
            raise CheckpointError(path, f"vae config: {key}[{i}] is not a [name, params] pair: {entry!r}")
        name, params = entry
        if name not in table:
            raise CheckpointError(path, f"unknown video VAE {side} block {name!r} in {key}[{i}] "
                                        f"(known: {', '.join(table)})")
        params = {"num_layers": params} if isinstance(params, int) else params
        if not isinstance(params, dict):
            raise CheckpointError(path, f"vae config: {key}[{i}] ({name}) has parameters {params!r}")
        if name == "res_x" and "num_layers" not in params:
            raise CheckpointError(path, f"vae config: {key}[{i}] (res_x) lacks the required key 'num_layers'")
        default = _DEFAULT_MULTIPLIER.get(name, 1) if encoder or name == "res_x_y" else 1
        block = Block(name, num_layers=params.get("num_layers", 1), multiplier=params.get("multiplier", default),
                      residual=bool(params.get("residual", False)) and name == "compress_all" and not encoder,
                      inject_noise=bool(params.get("inject_noise", False)) and not encoder
                      and name in ("res_x", "res_x_y"))
        for field_name in ("num_layers", "multiplier"):
            value = getattr(block, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise CheckpointError(path, f"vae config: {key}[{i}] ({name}): {field_name} must be a positive "
                                            f"integer, got {value!r}")
        blocks.append(block)
    return tuple(blocks)


def latent_channels(config: dict, path: str) -> int:
    """The latent width a header's ``vae`` section gives (the statistics' length)."""
    return _int(_vae_section(config, path), "latent_channels", 128, path)
