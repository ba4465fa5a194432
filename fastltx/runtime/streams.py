"""Work run on a second CUDA stream beside the current one's, joined back later.

The transformer's audio stream is a chain of small kernels (126 tokens: GEMMs bound by latency, not
by the GPU's throughput) that does not shrink when the video tokens are split over GPUs. Launched on
a stream of its own beside the video's work, it runs in the SMs the video's kernels leave free
instead of after them. ``Beside`` does the bookkeeping: the side stream first waits for what the
current stream has queued, the side work is launched inside ``with``, the current stream's own work
after it, then ``join`` makes the current stream wait for the side one.

Memory: a tensor made on the current stream and read by the side work may be freed by Python before
the side stream has read it, and the allocator would then hand its memory to the current stream's
next allocation. ``held`` keeps such tensors referenced until ``join`` (after which the current
stream is ordered behind the side work). A tensor made on the side stream returns to the side
stream's free memory when freed; its next use there comes after a later ``Beside``'s wait for the
current stream, which is ordered after that tensor's last use. CUDA graph capture records both
streams (the side stream joins the capture through the wait) and needs the side work joined before
the capture ends, so no collective that cuts a graph (``cuda_graph.between_pieces``) may run
between ``with`` and ``join``.
"""

import functools

import torch


def current_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.current_stream(device)


def use_stream(stream: torch.cuda.Stream):
    """A context in which ``stream`` is the current stream."""
    return torch.cuda.stream(stream)


@functools.cache
def side_stream(device: torch.device | str | int, priority: int = 0) -> torch.cuda.Stream:
    """One side stream per (device, priority) for the whole process (a stable object: the CUDA graphs
    of ``GraphedCall`` tell recordings apart by the objects their calls get)."""
    return torch.cuda.Stream(device=torch.device(device), priority=priority)


class Beside:
    """``with Beside(stream, *held):`` side work; then the current stream's work; then ``join()``.
    With ``stream`` None everything runs on the current stream (and ``join`` does nothing)."""

    def __init__(self, stream: torch.cuda.Stream | None, *held):
        self.stream, self.held = stream, held
        self.main: torch.cuda.Stream | None = None
        self._context = None

    def __enter__(self) -> "Beside":
        if self.stream is not None:
            self.main = current_stream(self.stream.device)
            self.stream.wait_stream(self.main)
            self._context = use_stream(self.stream)
            self._context.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._context is not None:
            self._context.__exit__(*exc)
            self._context = None

    def join(self) -> None:
        if self.main is not None:
            self.main.wait_stream(self.stream)
            self.main = None
        self.held = ()
