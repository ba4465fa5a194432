"""The transformer's configuration, read from ``config["transformer"]`` of an official checkpoint.

Geometry and numerics switches come from the header. Where the reference's built-in defaults
differ from the released checkpoints (rope type, AV timestep multiplier) the key is required; the
LTX-2.3 feature flags are absent from LTX-2 files and mean "off" when absent, as in the reference.
"""

from dataclasses import dataclass, field

from fastltx.checkpoint.safetensors_file import CheckpointError
from fastltx.layers.rope import RopeLayout

# Values the reference's configurator insists on; anything else is a layout we do not know.
FIXED_VALUES = {
    "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
    "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
    "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
    "positional_embedding_type": "rope", "use_middle_indices_grid": True,
}
FIXED_AV_VALUES = {"use_audio_video_cross_attention": True, "share_ff": False, "av_cross_ada_norm": True}


@dataclass(frozen=True)
class StreamGeometry:
    """One modality's stream: attention geometry, latent channels, text width, position scales."""

    heads: int
    head_dim: int
    in_channels: int
    out_channels: int
    context_dim: int  # width of the text context entering the blocks (after any caption projection)
    max_pos: tuple[float, ...]

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim


@dataclass(frozen=True)
class TransformerConfig:
    video: StreamGeometry | None
    audio: StreamGeometry | None
    num_layers: int
    norm_eps: float
    theta: float
    timestep_scale_multiplier: float
    av_ca_timestep_scale_multiplier: float
    rope_layout: RopeLayout
    rope_float64: bool
    gated_attention: bool = False
    cross_attention_adaln: bool = False
    # Width of the text features entering the transformer's caption projections (LTX-2); None when
    # the projection happens before the connectors (LTX-2.3), so no projection lives here.
    caption_channels: int | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> str:
        """'V1' for LTX-2 (19B) numerics, 'V2' for LTX-2.3 (22B)."""
        return "V1" if self.caption_channels is not None and not self.cross_attention_adaln else "V2"

    @property
    def ada_rows(self) -> int:
        return 9 if self.cross_attention_adaln else 6

    @property
    def cross_max_pos(self) -> float:
        return max(self.video.max_pos[0], self.audio.max_pos[0])

    def with_modalities(self, video: bool, audio: bool) -> "TransformerConfig":
        """The same model restricted to a video-only or audio-only stream."""
        from dataclasses import replace
        if (video and self.video is None) or (audio and self.audio is None) or not (video or audio):
            raise ValueError("requested modalities are not in this transformer")
        return replace(self, video=self.video if video else None, audio=self.audio if audio else None)

    def to_checkpoint_section(self, connector: dict | None = None) -> dict:
        """The ``config["transformer"]`` section an official file carries for this configuration.

        ``connector`` adds the text-connector keys (connector_*), which share this section.
        """
        v, a = self.video, self.audio
        t = {**FIXED_VALUES, **(FIXED_AV_VALUES if a is not None else {})}
        del t["num_vector_embeds"]
        t.update(num_layers=self.num_layers, num_attention_heads=v.heads, attention_head_dim=v.head_dim,
                 in_channels=v.in_channels, out_channels=v.out_channels, cross_attention_dim=v.context_dim,
                 positional_embedding_max_pos=list(_ints(v.max_pos)), norm_eps=self.norm_eps,
                 positional_embedding_theta=self.theta, timestep_scale_multiplier=_ints([self.timestep_scale_multiplier])[0],
                 rope_type=self.rope_layout.value, attention_type="default")
        if self.rope_float64:
            t["frequencies_precision"] = "float64"
        if a is not None:
            t.update(audio_num_attention_heads=a.heads, audio_attention_head_dim=a.head_dim,
                     audio_in_channels=a.in_channels, audio_out_channels=a.out_channels,
                     audio_cross_attention_dim=a.context_dim, audio_positional_embedding_max_pos=list(_ints(a.max_pos)),
                     av_ca_timestep_scale_multiplier=self.av_ca_timestep_scale_multiplier)
        if self.caption_channels is not None:
            t["caption_channels"] = self.caption_channels
        else:
            # with the three companion keys the reference requires to pick the V2 text feature extractor
            t.update(caption_proj_before_connector=True, caption_projection_first_linear=False,
                     caption_proj_input_norm=False, caption_projection_second_linear=False)
        if self.gated_attention:
            t["apply_gated_attention"] = True
        if self.cross_attention_adaln:
            t["cross_attention_adaln"] = True
        t.update(connector or {})
        return t

    @classmethod
    def from_checkpoint_config(cls, config: dict, path: str, audio_video: bool = True) -> "TransformerConfig":
        """Parse ``config["transformer"]``; ``audio_video=False`` reads a video-only transformer."""
        t = config.get("transformer")
        if not isinstance(t, dict):
            raise CheckpointError(path, "the header config has no 'transformer' section")

        def need(key):
            if key not in t:
                raise CheckpointError(path, f"transformer config lacks the required key {key!r}")
            return t[key]

        fixed = {**FIXED_VALUES, **(FIXED_AV_VALUES if audio_video else {})}
        for key, want in fixed.items():
            if t.get(key) != want:
                raise CheckpointError(path, f"unknown transformer layout: {key}={t.get(key)!r} (expected {want!r})")
        rope = need("rope_type")
        if rope not in ("split", "interleaved"):
            raise CheckpointError(path, f"unknown transformer layout: rope_type={rope!r}")
        precision = t.get("frequencies_precision")
        if precision not in (None, False, "float32", "float64"):
            raise CheckpointError(path, f"unknown transformer layout: frequencies_precision={precision!r}")
        before_connector = bool(t.get("caption_proj_before_connector", False))
        caption_channels = None if before_connector else int(need("caption_channels"))

        video = StreamGeometry(
            heads=int(need("num_attention_heads")), head_dim=int(need("attention_head_dim")),
            in_channels=int(need("in_channels")), out_channels=int(need("out_channels")),
            context_dim=int(need("cross_attention_dim")),
            max_pos=tuple(float(v) for v in need("positional_embedding_max_pos")))
        audio = None
        if audio_video:
            audio = StreamGeometry(
                heads=int(need("audio_num_attention_heads")), head_dim=int(need("audio_attention_head_dim")),
                in_channels=int(need("audio_in_channels")), out_channels=int(need("audio_out_channels")),
                context_dim=int(need("audio_cross_attention_dim")),
                max_pos=tuple(float(v) for v in need("audio_positional_embedding_max_pos")))
        if len(video.max_pos) != 3 or (audio is not None and len(audio.max_pos) != 1):
            raise CheckpointError(path, "unknown transformer layout: positional_embedding_max_pos must have 3 "
                                        "entries and audio_positional_embedding_max_pos 1")
        return cls(
            video=video, audio=audio, num_layers=int(need("num_layers")), norm_eps=float(need("norm_eps")),
            theta=float(need("positional_embedding_theta")),
            timestep_scale_multiplier=float(need("timestep_scale_multiplier")),
            av_ca_timestep_scale_multiplier=float(need("av_ca_timestep_scale_multiplier")) if audio_video else 1.0,
            rope_layout=RopeLayout(rope), rope_float64=precision == "float64",
            gated_attention=bool(t.get("apply_gated_attention", False)),
            cross_attention_adaln=bool(t.get("cross_attention_adaln", False)),
            caption_channels=caption_channels, raw=dict(t))


def _ints(values) -> list:
    """Whole floats written back as JSON integers, as the official headers spell them."""
    return [int(v) if float(v).is_integer() else v for v in values]
