"""A Triton kernel of ``fastltx.layers.fp8_kernels`` that the code can run without.

The kernel module is imported on first use (it needs Triton, absent from CPU installs). A kernel that
fails at its first launch (no C compiler for Triton here, no e4m3 conversion on this GPU) is marked
broken after one warning, and its caller takes its PyTorch path from then on; a failure after a
successful launch is a real error and is raised.
"""

import warnings

import torch


class OptionalKernel:
    def __init__(self, name: str, what: str):
        self.name, self.what = name, what  # the kernel's name in fp8_kernels; what it does, for the warning
        self.enabled = True  # False: callers take their PyTorch path (benchmarks compare the two)
        self.ran = False
        self.broken = False

    def kernel(self):
        """The Triton kernel, or None without Triton."""
        try:
            from fastltx.layers import fp8_kernels
        except ImportError:
            return None
        return getattr(fp8_kernels, self.name)

    def usable(self) -> bool:
        return self.enabled and not self.broken and not torch.compiler.is_compiling() and self.kernel() is not None

    def launch(self, device: torch.device, grid: tuple, *args, **meta) -> bool:
        """Run the kernel on ``grid``; False (after a warning, once) when its first launch fails."""
        try:
            with torch.cuda.device(device):
                self.kernel()[grid](*args, **meta)
        except Exception as e:  # noqa: BLE001 - only before the kernel ever ran: its build failed
            if self.ran:
                raise
            self.broken = True
            warnings.warn(f"{self.what}: the Triton kernel could not run here ({type(e).__name__}: {str(e)[:200]}); "
                          "using PyTorch's ops (slower)", RuntimeWarning, stacklevel=3)
            return False
        self.ran = True
        return True
