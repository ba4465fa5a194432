"""Tensors read from a safetensors file through one memory map, without copies.

``MappedFile.tensor(name)`` is a CPU tensor viewing the mapped file (nothing is read until it is
used); moving it to the GPU or into a host buffer is the only copy. ``release(names)`` then tells
the kernel that those pages are no longer needed, so that reading a 38 GB file keeps host memory
near the size of one tensor instead of the file's. The mapping is private (copy-on-write), so a
tensor written by mistake never changes the file.
"""

import mmap
import os

import torch

from fastltx.checkpoint.safetensors_file import CheckpointError, SafetensorsHeader, read_header

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_PAGE = mmap.PAGESIZE


class MappedFile:
    def __init__(self, header: SafetensorsHeader | str | os.PathLike):
        self.header = header if isinstance(header, SafetensorsHeader) else read_header(header)
        path = self.header.path
        self.size = os.path.getsize(path)
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)

    def _range(self, name: str) -> tuple[int, int, torch.dtype]:
        info = self.header.tensors[name]
        dtype = DTYPES.get(info.dtype)
        if dtype is None:
            raise CheckpointError(self.header.path, f"tensor {name} has dtype {info.dtype}, which is not supported")
        if info.offsets is None:
            raise CheckpointError(self.header.path, f"tensor {name} has no data_offsets")
        begin, end = (self.header.data_start + o for o in info.offsets)
        nbytes = info.numel * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes or end > self.size or begin < self.header.data_start:
            raise CheckpointError(self.header.path, f"tensor {name}: its data ({info.offsets}) does not match "
                                                    f"shape {list(info.shape)} x {info.dtype} within the file "
                                                    "(truncated or damaged)")
        return begin, end, dtype

    def tensor(self, name: str) -> torch.Tensor:
        """A CPU tensor viewing the file's bytes (no copy; pages are read on first use)."""
        begin, end, dtype = self._range(name)
        shape = self.header.tensors[name].shape
        if end == begin:
            return torch.empty(shape, dtype=dtype)
        flat = torch.frombuffer(self._map, dtype=torch.uint8, count=end - begin, offset=begin)
        return flat.view(dtype).view(shape)

    def release(self, names) -> None:
        """Drop the pages wholly inside these tensors from memory (they are read again if used again)."""
        if not hasattr(self._map, "madvise"):
            return
        for name in names:
            begin, end, _ = self._range(name)
            start, stop = -(-begin // _PAGE) * _PAGE, end // _PAGE * _PAGE
            if stop > start:
                self._map.madvise(mmap.MADV_DONTNEED, start, stop - start)

