"""CUDA graphs of a function over nested inputs: the kernels of a call launched by one graph replay.

A compiled transformer step split over several GPUs at a few thousand tokens is bound by the host:
launching the 48 blocks' kernels (the compiled graphs' wrappers, Dynamo's guards, the collectives)
takes longer than the GPU needs to run them (docs/benchmarks.md, the multi-GPU fifth session: 60 ms
of GPU work in a 106-168 ms step). ``GraphedCall`` records the kernels of one call and replays them.
Collectives are not recorded: a collective called through ``between_pieces`` (the ones of
``fastltx.runtime.distributed`` are) ends the graph recorded so far and runs eagerly, at every
replay, between that graph and the next one (with NCCL inside the graphs, full-size steps stalled:
docs/benchmarks.md, sixth session).

The inputs are nested tuples, lists, dicts, named tuples and dataclasses of tensors and plain values.
Each distinct signature (the structure, every tensor's shape, dtype, device and strides, every plain
value, every other object by identity) gets its own recording (one graph, or several with the
collectives between them): the first call with it runs ``fn`` as is (compiling, when ``fn`` is
compiled), the second warms up once more and records, and every later call copies
its tensors into the recording's own input buffers (skipping a tensor that is
the very one, unmodified, that the call before copied, such as a text cache passed at every step;
inference-mode tensors keep no version counter and are always copied), replays and returns the
recorded outputs. Those outputs are overwritten by the next replay of that recording: consume or clone
them before the next call. A tensor marked with ``static`` is no copy: the recording reads it where it
lies (its identity is part of the signature), so its owner refills it in place between calls (the
transformer's text cache store: no copy of 1.2 GB per recording and per stage). ``fn`` must not read
a tensor's value on the host (no ``.item()``, no data-dependent shapes) nor change its inputs'
structure in a way its result depends on; modules it uses may change their weights in place (LoRA
switching). ``weights`` (a function returning the tensors ``fn`` reads besides its inputs, such as a
module's parameters and buffers, looked up anew at every call) is checked at every call: weights
found at other addresses (moved out to host memory and back, say, or replaced) drop every graph,
and the next calls record new ones, instead of replays that would read freed memory. At most
``keep`` signatures hold a graph (and its memory); the least recently used one is dropped. A copy
of the object holding a ``GraphedCall`` (deepcopy, pickle) gets None in its place: no graphs.
``capture_error_mode``: torch.cuda.graph's (``"thread_local"`` lets other threads, such as NCCL's
watchdog, make CUDA calls during a capture).
"""

import copy
import dataclasses
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable

import torch


def static(t: torch.Tensor) -> torch.Tensor:
    """Mark ``t`` (this tensor object) as a static input of ``GraphedCall`` recordings: read where it
    lies, never copied (its owner writes new values into it in place); returns ``t``."""
    t._graph_static = True
    return t


def _is_static(t: torch.Tensor) -> bool:
    return getattr(t, "_graph_static", False)


def _signature(obj, leaves: list) -> tuple:
    """A hashable description of ``obj``'s structure and values; appends its tensors to ``leaves``."""
    if isinstance(obj, torch.Tensor):
        leaves.append(obj)
        if _is_static(obj):  # by identity: the recording reads this very tensor
            return ("static", id(obj))
        return ("t", tuple(obj.shape), obj.dtype, obj.device, obj.stride())
    if isinstance(obj, (list, tuple)):
        return (type(obj), tuple(_signature(o, leaves) for o in obj))
    if isinstance(obj, dict):
        return (dict, tuple((k, _signature(v, leaves)) for k, v in obj.items()))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj), tuple((f.name, _signature(getattr(obj, f.name), leaves)) for f in dataclasses.fields(obj)))
    if obj is None or isinstance(obj, (bool, int, float, str, torch.dtype, torch.device)):
        return ("v", obj)
    return ("id", id(obj))  # process groups and other objects: by identity


def _rebuild(obj, leaves):
    """A copy of ``obj`` whose tensors are taken, in ``_signature``'s order, from the iterator ``leaves``."""
    if isinstance(obj, torch.Tensor):
        return next(leaves)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple
        return type(obj)(*(_rebuild(o, leaves) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild(o, leaves) for o in obj)
    if isinstance(obj, dict):
        return {k: _rebuild(v, leaves) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = copy.copy(obj)
        for f in dataclasses.fields(obj):
            object.__setattr__(out, f.name, _rebuild(getattr(obj, f.name), leaves))
        return out
    return obj


# The recording in progress (one at a time, on the thread that records): see ``between_pieces``.
_recording: "_Pieces | None" = None


def between_pieces(step: Callable[[], object], *uses: torch.Tensor) -> None:
    """Run ``step`` (a collective) now. Inside a recording, the graph piece recorded so far ends
    here, ``step`` runs eagerly (on buffers the recorded kernels have not filled: what it exchanges
    then is not used) and is kept, with ``uses`` (the tensors it reads and writes, held at their
    addresses), to run at this point of every replay; then the next piece starts."""
    if _recording is None:
        step()
    else:
        _recording.eager(step, uses)


class _Pieces:
    """The CUDA graphs of one call, recorded one after the other into one memory pool, and the eager
    steps between them (collectives: NCCL inside graphs stalled at full size, docs/benchmarks.md).
    The pieces share the pool as consecutive recordings may: they are replayed in recording order."""

    def __init__(self, capture_error_mode: str):
        self.mode, self.pool = capture_error_mode, torch.cuda.graph_pool_handle()
        self.steps: list[Callable[[], object]] = []  # graph replays and eager steps, in order
        self.held: list[tuple[torch.Tensor, ...]] = []  # what the eager steps read and write
        self.graph: torch.cuda.CUDAGraph | None = None

    def record(self, fn: Callable, args: tuple):
        """``fn(*args)`` recorded (on the current stream, which must not be the default one)."""
        global _recording
        if _recording is not None:
            raise RuntimeError("a CUDA graph recording is already in progress")
        _recording = self
        try:
            self._start()
            outputs = fn(*args)
            self._stop()
            return outputs
        finally:
            _recording = None
            if self.graph is not None:  # fn failed inside a piece: end its capture
                try:
                    self.graph.capture_end()
                except RuntimeError:
                    pass
                self.graph = None

    def _start(self) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.graph.capture_begin(pool=self.pool, capture_error_mode=self.mode)

    def _stop(self) -> None:
        self.graph.capture_end()
        self.steps.append(self.graph.replay)
        self.graph = None

    def eager(self, step: Callable[[], object], uses: tuple[torch.Tensor, ...]) -> None:
        self._stop()
        step()
        self.steps.append(step)
        self.held.append(uses)
        self._start()

    @property
    def graphs(self) -> int:
        return len(self.steps) - len(self.held)

    def replay(self) -> None:
        for step in self.steps:
            step()


class _Graph:
    def __init__(self, fn: Callable, args: tuple, leaves: list[torch.Tensor], capture_error_mode: str = "global"):
        self.inputs = [t if _is_static(t) else t.clone() for t in leaves]  # the graph's own input buffers
        self.sources = [None] * len(leaves)  # (weak reference, version) of what each buffer last copied
        self.template = args
        device = leaves[0].device if leaves else torch.device("cuda")
        caller, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)
        side.wait_stream(caller)
        self.pieces = _Pieces(capture_error_mode)
        try:
            with torch.cuda.stream(side):  # a warm-up, then the recording, on a side stream
                fn(*_rebuild(args, iter(self.inputs)))
                torch.cuda.synchronize(device)
                self.outputs = self.pieces.record(fn, _rebuild(args, iter(self.inputs)))
        finally:
            # the caller's stream (not the side one, current inside the block) waits for what the
            # recording ran eagerly: its collectives, on garbage, still writing the buffers the first
            # replay fills (they overwrote its exchanged keys: 2 x H200, "keys", 30 of 30 first
            # replays wrong before this wait was on the right stream, docs/benchmarks.md)
            caller.wait_stream(side)

    def __call__(self, leaves: list[torch.Tensor]):
        for i, (buffer, t) in enumerate(zip(self.inputs, leaves)):
            if buffer is t:  # a static input (or the very buffer): read where it lies
                continue
            seen = self.sources[i]
            version = None if t.is_inference() else t._version  # inference tensors keep no version
            if seen is None or seen[0]() is not t or version is None or seen[1] != version:
                buffer.copy_(t)
                self.sources[i] = (weakref.ref(t), version)
        self.pieces.replay()
        return self.outputs


class GraphedCall:
    def __init__(self, fn: Callable, keep: int = 4, weights: Callable[[], Iterable[torch.Tensor]] | None = None,
                 capture_error_mode: str = "global"):
        self.fn, self.keep, self.weights, self.capture_error_mode = fn, keep, weights, capture_error_mode
        self.graphs: OrderedDict[tuple, _Graph | None] = OrderedDict()  # None: seen once, not recorded yet
        self.placed: tuple | None = None  # where the weights were when the graphs were recorded

    def signature(self, args: tuple) -> tuple[tuple, list[torch.Tensor]]:
        """(key, tensors) of a call: ``_signature`` of the arguments; where the weights lie is kept
        in ``placed``: weights found elsewhere than before drop every graph (they read the old places)."""
        leaves: list[torch.Tensor] = []
        key = _signature(args, leaves)
        if self.weights is not None:
            placed = tuple(map(torch.Tensor.data_ptr, self.weights()))
            if placed != self.placed:
                self.graphs.clear()
                self.placed = placed
        return key, leaves

    def __call__(self, *args):
        key, leaves = self.signature(args)
        if not leaves or not all(t.is_cuda for t in leaves):
            return self.fn(*args)
        if key not in self.graphs:  # first call: as is (compiles)
            self.graphs[key] = None
            self._trim()
            return self.fn(*args)
        self.graphs.move_to_end(key)
        if self.graphs[key] is None:
            self.graphs[key] = _Graph(self.fn, args, leaves, self.capture_error_mode)
        return self.graphs[key](leaves)

    def _trim(self) -> None:
        while len(self.graphs) > self.keep:
            self.graphs.popitem(last=False)

    def reset(self) -> None:
        """Drop every graph (after weights were replaced, say)."""
        self.graphs.clear()

    def __reduce__(self):
        """A copy (deepcopy, pickle) of whatever holds this keeps no graphs: None in its place."""
        return (_dropped, ())


def _dropped() -> None:
    return None
