"""The text path's configuration: feature-extractor variant, projection widths, connector geometry.

It comes from the transformer section of an official checkpoint's header (the text connectors
share it) and from the Gemma model that feeds it. The reference's rules, kept here:

* The feature extractor is "V1" (LTX-2: per-layer masked normalisation, one projection without bias)
  when none of the ``caption_proj*`` keys of LTX-2.3 is present, and "V2" (LTX-2.3: per-token RMS,
  two projections with bias) when all four are, with their only known values; anything else is an
  unknown layout.
* Connector geometry: ``connector_*`` keys, the audio connector's own ``audio_connector_*`` keys
  falling back to the video ones; defaults where the reference has them and they equal the
  released values (30 heads x 128, 2 layers, 128 registers). The connector's RoPE max position is
  required: its built-in default ([1]) differs from the released checkpoints ([4096]).
* RoPE layout and frequency-grid precision are the transformer's ``rope_type`` and
  ``frequencies_precision``; theta is fixed at 10000 (the reference never reads it for connectors).
"""

from dataclasses import dataclass

from fastltx.checkpoint.safetensors_file import CheckpointError
from fastltx.layers.rope import RopeLayout

V2_KEYS = {"caption_proj_before_connector": True, "caption_projection_first_linear": False,
           "caption_proj_input_norm": False, "caption_projection_second_linear": False}
CONNECTOR_THETA = 10000.0
NORM_EPS = 1e-6
_DEFAULTS = {"num_attention_heads": 30, "attention_head_dim": 128, "num_layers": 2, "num_learnable_registers": 128}


@dataclass(frozen=True)
class GemmaGeometry:
    """What the text path needs to know of the Gemma model: its width and depth."""

    hidden: int
    layers: int

    @property
    def states(self) -> int:
        """Hidden states used: the embedding output plus one per layer (the last one after the final norm)."""
        return self.layers + 1

    @property
    def feature_width(self) -> int:
        """Width of the flattened hidden states, the projections' input."""
        return self.hidden * self.states


@dataclass(frozen=True)
class ConnectorConfig:
    heads: int
    head_dim: int
    num_layers: int
    num_registers: int
    max_pos: tuple[float, ...]
    gated: bool

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim


@dataclass(frozen=True)
class TextConfig:
    version: str  # "V1" (LTX-2) or "V2" (LTX-2.3)
    gemma: GemmaGeometry
    video: ConnectorConfig
    audio: ConnectorConfig | None
    rope_layout: RopeLayout
    rope_float64: bool

    @classmethod
    def from_checkpoint_config(cls, config: dict, path: str, gemma: GemmaGeometry,
                               audio: bool = True) -> "TextConfig":
        """Parse the header config; ``audio=False`` for a file without an audio connector."""
        t = config.get("transformer")
        if not isinstance(t, dict):
            raise CheckpointError(path, "the header config has no 'transformer' section (the text connectors' "
                                        "settings live there)")
        version = _version(t, path)
        for key in ("rope_type", "connector_positional_embedding_max_pos"):
            if key not in t:
                raise CheckpointError(path, f"transformer config lacks the required key {key!r}")
        rope = t["rope_type"]
        if rope not in ("split", "interleaved"):
            raise CheckpointError(path, f"unknown text connector layout: rope_type={rope!r} "
                                        "(expected 'split' or 'interleaved')")
        precision = t.get("frequencies_precision")
        if precision not in (None, False, "float32", "float64"):
            raise CheckpointError(path, f"unknown text connector layout: frequencies_precision={precision!r}")
        max_pos = t["connector_positional_embedding_max_pos"]
        if not isinstance(max_pos, list) or len(max_pos) != 1:
            raise CheckpointError(path, f"unknown text connector layout: connector_positional_embedding_max_pos="
                                        f"{max_pos!r} (expected one entry)")
        gated = bool(t.get("connector_apply_gated_attention", False))
        registers = int(t.get("connector_num_learnable_registers", _DEFAULTS["num_learnable_registers"]))

        def connector(prefix: str) -> ConnectorConfig:
            def get(key):
                return int(t.get(prefix + key, t.get("connector_" + key, _DEFAULTS[key])))
            return ConnectorConfig(get("num_attention_heads"), get("attention_head_dim"), get("num_layers"), registers,
                                   (float(max_pos[0]),), gated)

        video = connector("connector_")
        audio_cfg = connector("audio_connector_") if audio else None
        if version == "V1" and audio_cfg is not None and audio_cfg.dim != video.dim:
            raise CheckpointError(path, f"unknown text connector layout: LTX-2 (V1) feeds the same features to both "
                                        f"connectors, but they are {video.dim} and {audio_cfg.dim} wide")
        return cls(version, gemma, video, audio_cfg, RopeLayout(rope), precision == "float64")


def _version(t: dict, path: str) -> str:
    present = t.keys() & V2_KEYS.keys()
    if not present:
        return "V1"
    missing = sorted(V2_KEYS.keys() - present)
    if missing:
        raise CheckpointError(path, f"unknown text projection layout: LTX-2.3 keys present but {', '.join(missing)} "
                                    "missing")
    wrong = [f"{k}={t[k]!r} (expected {v!r})" for k, v in V2_KEYS.items() if t[k] != v]
    if wrong:
        raise CheckpointError(path, f"unknown text projection layout: {', '.join(wrong)}")
    return "V2"
