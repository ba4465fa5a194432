"""A Triton kernel of ``fastltx.layers.fp8_kernels`` that the code can run without.

The kernel module is imported on first use (it needs Triton, absent from CPU installs). A kernel that
fails at the first launch of a specialisation (no C compiler for Triton here, no e4m3 conversion on
this GPU, too many registers at a width) is marked broken after one warning, and its caller takes its
PyTorch path from then on; a failure of a specialisation that ran before is a real error and is raised.
"""

import functools
import warnings

import torch


@functools.cache
def _kernels():
    """The kernel module, or None without Triton (looked up once)."""
    try:
        from fastltx.layers import fp8_kernels
    except ImportError:
        return None
    return fp8_kernels


class OptionalKernel:
    def __init__(self, name: str, what: str):
        self.name, self.what = name, what  # the kernel's name in fp8_kernels; what it does, for the warning
        self.enabled = True  # False: callers take their PyTorch path (benchmarks compare the two)
        self.ran: set = set()  # the specialisations (meta-parameters, dtypes) that have run
        self.broken = False

    def kernel(self):
        """The Triton kernel, or None without Triton."""
        module = _kernels()
        return None if module is None else getattr(module, self.name)

    def usable(self) -> bool:
        return self.enabled and not self.broken and not torch.compiler.is_compiling() and self.kernel() is not None

    def launch(self, device: torch.device, grid: tuple, *args, **meta) -> bool:
        """Run the kernel on ``grid``; False (after a warning, once) when a specialisation's first
        launch fails (Triton compiles one per meta-parameters and dtypes)."""
        key = (tuple(sorted(meta.items())), tuple(a.dtype for a in args if isinstance(a, torch.Tensor)))
        try:
            with torch.cuda.device(device):
                self.kernel()[grid](*args, **meta)
        except Exception as e:  # noqa: BLE001 - only before this specialisation ever ran: its build failed
            if key in self.ran:
                raise
            self.broken = True
            warnings.warn(f"{self.what}: the Triton kernel could not run here ({type(e).__name__}: {str(e)[:200]}); "
                          "using PyTorch's ops (slower)", RuntimeWarning, stacklevel=3)
            return False
        self.ran.add(key)
        return True
