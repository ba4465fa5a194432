"""A second CUDA stream for work that runs beside the current stream's (the audio stream of the
transformer beside its video stream: small, latency-bound kernels that fill the SMs the large
ones leave idle).

``Beside.fork()`` is a context in which kernels go to the side stream once it has waited for what
the current stream enqueued so far; ``join()`` makes the current stream wait for the side stream.
Memory: a tensor allocated on the current stream and read on the side one must stay referenced
until the ``join`` (otherwise the allocator may hand its memory to the current stream's next kernel
while the side stream still reads it); tensors allocated on the side stream and read after the
``join`` are safe, as the side stream only reuses its memory after its next ``fork`` waited for the
current stream. ``Beside.ordered()`` (no CUDA stream: the CPU, tests) runs everything in order on
the current stream, so the same code runs there. The stream's kernels are recorded by CUDA graph
captures as a branch of the graph (fork and join inside one recorded piece).
"""

import contextlib

import torch


class Beside:
    def __init__(self, stream: "torch.cuda.Stream | None"):
        self.stream = stream

    @classmethod
    def on(cls, device: torch.device) -> "Beside":
        """A high-priority side stream on ``device`` (a CUDA device), or the ordered form elsewhere."""
        if device.type != "cuda":
            return cls(None)
        low, high = torch.cuda.Stream.priority_range()  # (0, -5): a lower number is a higher priority
        return cls(torch.cuda.Stream(device, priority=high))

    @classmethod
    def ordered(cls) -> "Beside":
        return cls(None)

    def fork(self):
        if self.stream is None:
            return contextlib.nullcontext()
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        return torch.cuda.stream(self.stream)

    def join(self) -> None:
        if self.stream is not None:
            torch.cuda.current_stream(self.stream.device).wait_stream(self.stream)


@contextlib.contextmanager
def sm_carveout(sms: int):
    """cuBLAS matmuls launched inside leave ``sms`` SMs free (PyTorch's experimental carveout: the
    GEMMs' SM count target), for kernels of another stream to run beside them; 0: no change."""
    if not sms:
        yield
        return
    before = torch._C._get_sm_carveout_experimental()
    torch._C._set_sm_carveout_experimental(sms)
    try:
        yield
    finally:
        torch._C._set_sm_carveout_experimental(before)
