"""Reading official single-file ``.safetensors`` checkpoints: header, metadata and config JSON.

The header is parsed here directly (8-byte little-endian length, then JSON) so that every way a
file can be wrong gives one clear line naming the file, before any tensor is read.
"""

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the header size


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors dtype name, e.g. "BF16", "F32", "F8_E4M3"
    shape: tuple[int, ...]
    offsets: tuple[int, int] | None = None  # byte range in the data section (after the header)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class SafetensorsHeader:
    path: str
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int = 0  # file offset of the data section (8 + header length)

    def config(self) -> dict:
        """The ``config`` JSON of the metadata (an error if it is absent or not a JSON object)."""
        if "config" not in self.metadata:
            raise CheckpointError(self.path, "the safetensors header has no 'config' metadata entry; "
                                             "official LTX-2 checkpoints carry their model config there")
        try:
            cfg = json.loads(self.metadata["config"])
        except json.JSONDecodeError as e:
            raise CheckpointError(self.path, f"the 'config' metadata entry is not valid JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise CheckpointError(self.path, "the 'config' metadata entry is not a JSON object")
        return cfg


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Parse a safetensors file's header without reading any tensor data."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(path, "no such file")
    if not p.is_file():
        raise CheckpointError(path, "not a file (a converted checkpoint directory is not supported yet)")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(path, f"not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(path, "not a safetensors file (invalid header length)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(path, "not a safetensors file (the header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a safetensors file (the header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    try:
        for name, info in header.items():
            offsets = info.get("data_offsets")
            offsets = None if offsets is None else (int(offsets[0]), int(offsets[1]))
            tensors[name] = TensorInfo(info["dtype"], tuple(int(s) for s in info["shape"]), offsets)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise CheckpointError(path, f"not a safetensors file (bad entry for tensor {name!r})") from None
    return SafetensorsHeader(str(path), tensors, dict(metadata), 8 + n)
