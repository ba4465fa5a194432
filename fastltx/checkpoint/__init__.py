"""Official checkpoint reading: header and config, strict loading, the tiny-model factory."""

from fastltx.checkpoint.safetensors_file import CheckpointError, SafetensorsHeader, TensorInfo, read_header

__all__ = ["CheckpointError", "SafetensorsHeader", "TensorInfo", "read_header"]
