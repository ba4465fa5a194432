"""The latent upsampler's configuration: the flat ``config`` of its own checkpoint file.

Keys absent from the header take the reference's defaults (the LTX-2 spatial x2 upsampler: 128
latent channels, 512 wide, 4 resnets per stage, 3-D convolutions). Combinations the reference
cannot run (a 2-D model with a rational or temporal upsampler) are refused.
"""

from dataclasses import asdict, dataclass

from fastltx.checkpoint.safetensors_file import CheckpointError

# Rational spatial scales and their (up, down) integer factors.
RATIONAL_SCALES = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}
GROUPS = 32  # GroupNorm groups throughout


@dataclass(frozen=True)
class UpsamplerConfig:
    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    dims: int = 3
    spatial_upsample: bool = True
    temporal_upsample: bool = False
    spatial_scale: float = 2.0
    rational_resampler: bool = False

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        if self.dims not in (2, 3):
            return f"dims must be 2 or 3, got {self.dims!r}"
        if not (self.spatial_upsample or self.temporal_upsample):
            return "neither spatial_upsample nor temporal_upsample is set"
        if self.mid_channels % GROUPS:
            return f"mid_channels must be a multiple of {GROUPS} (GroupNorm groups), got {self.mid_channels}"
        if self.rational_resampler and self.spatial_upsample and not self.temporal_upsample \
                and float(self.spatial_scale) not in RATIONAL_SCALES:
            return f"spatial_scale {self.spatial_scale} is not one of {sorted(RATIONAL_SCALES)}"
        if self.dims == 2 and (self.temporal_upsample or self.rational_resampler):
            return "a 2-D upsampler can only upsample spatially by 2 (ltx-core cannot run the others either)"
        return None

    @property
    def rational(self) -> bool:
        """Whether the spatial rational resampler is used (the reference ignores the flag with temporal)."""
        return self.rational_resampler and self.spatial_upsample and not self.temporal_upsample

    @classmethod
    def from_checkpoint_config(cls, config: dict, path: str) -> "UpsamplerConfig":
        unknown_type = [k for k in ("in_channels", "mid_channels", "num_blocks_per_stage", "dims")
                        if k in config and (not isinstance(config[k], int) or isinstance(config[k], bool))]
        if unknown_type:
            raise CheckpointError(path, f"upsampler config: {unknown_type[0]} must be an integer, "
                                        f"got {config[unknown_type[0]]!r}")
        values = {k: config[k] for k in asdict(cls()) if k in config}
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise CheckpointError(path, f"unsupported latent upsampler: {e}") from None

    def to_checkpoint_config(self) -> dict:
        return asdict(self)
