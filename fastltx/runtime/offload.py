"""Models whose weights live in host memory: the device holds what fits, the rest streams in.

Every parameter and buffer of an ``Offloaded`` model has a *home*: a slice of one flat host buffer
per group (pinned where CUDA is, so copies run at full speed and overlap compute); the groups are
each layer of the model's layer stack and "the rest". The tensors keep their identity (whoever
holds the model keeps working); only their ``.data`` moves between the home and a device copy.

* ``admit(streamed)``: the rest and all but ``streamed`` layers are copied to the device and stay;
  the streamed layers are spread evenly over the stack (``streamed_layers``: the last one is the
  stack's last), so resident layers run between them. Each is copied into one of ``ahead + 1``
  rotating device slots on a side stream, ``ahead`` streamed layers before it runs (forward hooks on
  the layers and on their parts, which some callers run on their own, e.g. text K/V caching), so
  the copies overlap the compute of the layers in between. The last streamed layers of a forward
  prefetch the first ones of the next forward.
* ``evict()``: every tensor back at its home, device copies and slots freed.
* ``host`` parts (e.g. a token embedding, of which a forward reads a few rows) stay at their homes
  and run on the CPU: their inputs are moved there and their outputs to the device.

On the CPU (tests) "host" and "device" are both the CPU and copies are synchronous, but the same
code runs: homes, slots, hooks, prefetch order.
"""

from collections import deque
from dataclasses import dataclass

import torch
from torch import nn

ALIGN = 512  # bytes: every tensor's offset in a flat buffer, as the CUDA caching allocator aligns (GEMM
# kernels are picked by alignment too: resident and streamed layers then compute the same bits)
CHUNK = 4 * 2**30  # pinned host memory is taken in chunks of up to this many bytes


class _HostArena:
    """Host buffers handed out as slices of a few large chunks. PyTorch's pinned-memory allocator
    rounds every request up to a power of two: one 0.37 GB fp8 block would take 0.5 GB, so the
    chunks are powers of two themselves and each holds many groups. ``expected``: the bytes all
    groups will take (the model's tensors), so that no chunk exceeds the power of two above what is left:
    pinning costs time (~2 GB/s; an H100 run lost 4 s pinning 8x oversized chunks of small models)."""

    def __init__(self, pin: bool, expected: int = 0):
        self.pin, self.chunks = pin, []  # [tensor, bytes used]
        self.expected, self.taken = expected, 0

    def take(self, nbytes: int) -> torch.Tensor:
        nbytes = -(-nbytes // ALIGN) * ALIGN
        for chunk in self.chunks:
            if chunk[0].numel() - chunk[1] >= nbytes:
                break
        else:
            left = self.expected - self.taken if self.expected else 8 * nbytes
            size = max(_pow2(nbytes), min(CHUNK, _pow2(left)))
            chunk = [torch.empty(size, dtype=torch.uint8, pin_memory=self.pin), 0]
            self.chunks.append(chunk)
        out = chunk[0][chunk[1]:chunk[1] + nbytes]
        chunk[1] += nbytes
        self.taken += nbytes
        return out


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _tensors(module: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """Every parameter and buffer of ``module`` once (shared ones once), with its owner and name."""
    seen, out = set(), []
    for m in module.modules():
        for name, t in [*m._parameters.items(), *m._buffers.items()]:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append((m, name, t))
    return out


def _dense(t: torch.Tensor) -> bool:
    """Whether ``t`` covers exactly ``numel`` consecutive elements of its storage (any dim order)."""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


@dataclass
class _Entry:
    tensor: torch.Tensor
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: torch.Size
    stride: tuple[int, ...]

    def view(self, flat: torch.Tensor) -> torch.Tensor:
        return flat[self.offset:self.offset + self.nbytes].view(self.dtype).as_strided(self.shape, self.stride)


class _Group:
    """The tensors of one layer (or of the rest of the model) packed into one flat host buffer."""

    def __init__(self, tensors: list[torch.Tensor], arena: _HostArena):
        self.entries, offset = [], 0
        for t in tensors:
            if not _dense(t):
                t.data = t.data.contiguous()
            nbytes = t.numel() * t.element_size()
            self.entries.append(_Entry(t, offset, nbytes, t.dtype, t.shape, t.stride()))
            offset += -(-nbytes // ALIGN) * ALIGN
        self.nbytes = offset
        self.home = arena.take(offset)
        for e in self.entries:
            raw = e.tensor.detach().as_strided((e.tensor.numel(),), (1,))
            self.home[e.offset:e.offset + e.nbytes].view(e.dtype).copy_(raw)
            e.tensor.data = e.view(self.home)
        self.device: torch.Tensor | None = None  # a resident copy

    def point(self, flat: torch.Tensor) -> None:
        for e in self.entries:
            e.tensor.data = e.view(flat)


class Offloaded:
    """Host-homed weights of ``root`` with ``layers`` (a ModuleList inside it, or None) as the unit of
    streaming; see the module docstring. Build the homes with ``home_layer(i)`` as each layer is
    final and ``home_rest()`` last (or ``home_all()`` for a model already loaded)."""

    def __init__(self, root: nn.Module, device: torch.device | str, layers: nn.ModuleList | None = None,
                 ahead: int = 2, host: list[nn.Module] | tuple = ()):
        self.root, self.device, self.ahead = root, torch.device(device), ahead
        self.layers = list(layers) if layers is not None else []
        self.host = list(host)  # parts that run from host memory: never copied, inputs and outputs moved
        device = self.device  # (the hook must not hold the Offloaded: a cycle would keep the pinned homes alive)
        for part in self.host:
            part.register_forward_pre_hook(_on_host)
            part.register_forward_hook(lambda module, args, out: out.to(device, non_blocking=True))
        self.pin = self.device.type == "cuda"
        self.arena = _HostArena(self.pin)
        self.groups: dict[int | str, _Group] = {}
        self.streamed = 0
        self.admitted = False
        self._stream: _LayerStream | None = None

    # -------------------------------------------------------------------------------------- homes
    def home_layer(self, i: int) -> None:
        self._expect(i)
        self.groups[i] = _Group([t for _, _, t in _tensors(self.layers[i])], self.arena)

    def _expect(self, first: int | None) -> None:
        """Tell the arena, at the first home made, what all homes will take: every layer as large as
        layer ``first`` is now (loading converts each layer, e.g. to fp8, just before its home is
        made) and the rest as it is."""
        if self.groups:
            return
        size = lambda tensors: sum(-(-t.numel() * t.element_size() // ALIGN) * ALIGN for t in tensors)  # noqa: E731
        in_layers = {id(t) for layer in self.layers for _, _, t in _tensors(layer)}
        hosted = {id(t) for part in self.host for _, _, t in _tensors(part)}
        rest = size(t for _, _, t in _tensors(self.root) if id(t) not in in_layers | hosted)
        per = size(t for _, _, t in _tensors(self.layers[first])) if first is not None else 0
        self.arena.expected = rest + per * len(self.layers)

    def home_rest(self) -> None:
        self._expect(None)
        done = {id(e.tensor) for g in self.groups.values() for e in g.entries}
        if self.host:
            tensors = [t for part in self.host for _, _, t in _tensors(part) if id(t) not in done]
            self.groups["host"] = _Group(tensors, _HostArena(False))  # read by the CPU only: not pinned
            done |= {id(t) for t in tensors}
        self.groups["rest"] = _Group([t for _, _, t in _tensors(self.root) if id(t) not in done], self.arena)

    def home_all(self) -> None:
        for i in range(len(self.layers)):
            self.home_layer(i)
        self.home_rest()

    @property
    def host_bytes(self) -> int:
        """Bytes of host memory the homes take (whole chunks)."""
        return sum(chunk.numel() for chunk, _ in self.arena.chunks)

    @property
    def device_bytes(self) -> int:
        """Bytes on the device while admitted: the resident groups and the slots."""
        resident = sum(g.nbytes for g in self.groups.values() if g.device is not None)
        return resident + (self._stream.slot_bytes if self._stream is not None else 0)

    # -------------------------------------------------------------------------------------- placement
    def admit(self, streamed: int = 0, ahead: int | None = None) -> None:
        """Copy the rest and the resident layers to the device; stream ``streamed`` layers
        (``streamed_layers``), each copied ``ahead`` streamed layers before use (default: as built)."""
        ahead = self.ahead if ahead is None else ahead
        if self.admitted and streamed == self.streamed and ahead == self.ahead:
            return
        self.evict()
        self.ahead = ahead
        n = len(self.layers)
        streamed = min(streamed, n)
        moving = streamed_layers(n, streamed)
        resident = [g for key, g in self.groups.items() if key == "rest" or (key != "host" and key not in moving)]
        # one allocation for all resident groups: models taking turns free and take one block each
        # (group sizes are multiples of ALIGN, so every slice keeps the allocator's alignment)
        block = torch.empty(sum(g.nbytes for g in resident), dtype=torch.uint8, device=self.device)
        offset = 0
        for group in resident:
            group.device = block[offset:offset + group.nbytes]
            offset += group.nbytes
            group.device.copy_(group.home, non_blocking=self.pin)
            group.point(group.device)
        if streamed:
            self._stream = _LayerStream([(self.layers[i], self.groups[i]) for i in moving], self.device, self.ahead)
        self.streamed, self.admitted = streamed, True

    def evict(self) -> None:
        """Every tensor back at its home; the device copies and slots are freed."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        for group in self.groups.values():
            if group.device is not None:
                group.point(group.home)
                group.device = None
        self.admitted = False

    def invalidate(self) -> None:
        """Homes were written in place (a LoRA switch): drop copies prefetched from the old values."""
        if self._stream is not None:
            self._stream.reset()


def _on_host(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.cpu() if isinstance(a, torch.Tensor) else a for a in args)


def streamed_layers(n: int, streamed: int) -> list[int]:
    """Which of ``n`` layers stream when ``streamed`` do: spread evenly, the last one last
    (``n // streamed - 1`` or more resident layers run between two streamed ones, hiding copies)."""
    return [(k + 1) * n // streamed - 1 for k in range(streamed)] if streamed else []


class _LayerStream:
    """Streamed layers copied into rotating device slots ahead of use (see the module docstring)."""

    def __init__(self, layers: list[tuple[nn.Module, _Group]], device: torch.device, ahead: int):
        self.layers, self.device = layers, device
        self.cuda = device.type == "cuda"
        size = max(g.nbytes for _, g in layers)
        count = min(ahead + 1, len(layers))
        self.ahead = count - 1
        self.slots = list(torch.empty(size * count, dtype=torch.uint8, device=device).split(size))  # one block
        self.slot_bytes = size * count
        self.copy_stream = torch.cuda.Stream(device) if self.cuda else None
        if self.cuda:  # the slots' memory may have been another tensor's, still read by queued kernels
            self.copy_stream.wait_stream(torch.cuda.current_stream(device))
        self.freed: list = [None] * count  # per slot: event after its last reader ran
        self.pending: deque = deque()  # (position, slot, ready event) in issue order
        self.next_slot = 0
        self.current: tuple[int, int] | None = None
        self.handles = []
        for position, (layer, _) in enumerate(layers):
            self.handles.append(layer.register_forward_pre_hook(self._before(position)))
            self.handles.append(layer.register_forward_hook(self._after(position)))
            for part in layer.modules():  # parts may run outside the layer's forward (text K/V caching)
                if part is not layer and any(t is not None for t in [*part._parameters.values(),
                                                                      *part._buffers.values()]):  # fp8: buffers
                    self.handles.append(part.register_forward_pre_hook(self._part(position)))

    def _issue(self, position: int) -> None:
        slot = self.next_slot
        self.next_slot = (slot + 1) % len(self.slots)
        group = self.layers[position][1]
        target = self.slots[slot][:group.nbytes]
        if self.cuda:
            with torch.cuda.stream(self.copy_stream):
                if self.freed[slot] is not None:
                    self.copy_stream.wait_event(self.freed[slot])
                target.copy_(group.home, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(self.copy_stream)
        else:
            target.copy_(group.home)
            ready = None
        self.pending.append((position, slot, ready))

    def _before(self, position: int):
        def hook(module, args):
            if self.current is not None:
                if self.current[0] == position:  # a part of the layer on its slot already
                    return
                self._after(self.current[0])(None, None, None)  # a layer entered through its parts ends here
            if not self.pending or self.pending[0][0] != position:
                self.reset()
                self._issue(position)
            _, slot, ready = self.pending.popleft()
            if ready is not None:
                torch.cuda.current_stream(self.device).wait_event(ready)
            self.layers[position][1].point(self.slots[slot])
            self.current = (position, slot)
            last = self.pending[-1][0] if self.pending else position
            while len(self.pending) < self.ahead:  # the next layers, wrapping to the next forward's first
                last = (last + 1) % len(self.layers)
                self._issue(last)
        return hook

    def _part(self, position: int):
        """A part of a streamed layer about to run: its layer onto a slot unless it is there (``_before``
        checks; the layer's own forward put it there; inside a compiled layer the parts never need it)."""
        before = self._before(position)

        def hook(module, args):
            if not torch.compiler.is_compiling():
                before(module, args)
        return hook

    def _after(self, position: int):
        def hook(module, args, output):
            if self.current is not None and self.current[0] == position:
                slot = self.current[1]
                if self.cuda:
                    event = torch.cuda.Event()
                    event.record(torch.cuda.current_stream(self.device))
                    self.freed[slot] = event
                self.current = None
            group = self.layers[position][1]
            group.point(group.home)
        return hook

    def reset(self) -> None:
        """Forget prefetched layers (their slots are reused in order; copies stay stream-ordered)."""
        self.pending.clear()
        if self.current is not None:  # a forward that stopped midway (an exception) left a layer on a slot
            group = self.layers[self.current[0]][1]
            group.point(group.home)
            self.current = None

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        if self.cuda:
            torch.cuda.current_stream(self.device).wait_stream(self.copy_stream)
        for layer, group in self.layers:
            group.point(group.home)
        self.pending.clear()
        self.slots = []


def load_layered(reader, layers_name: str, device: torch.device | str, dtype: torch.dtype | None,
                 convert=None, adjust=None, offload: Offloaded | None = None) -> nn.Module:
    """Load a ``ComponentReader``'s model one layer of ``layers_name`` (a ModuleList) at a time, then
    the rest: each part read from the memory map, moved once (to the device, or straight into its
    host home when nothing needs computing), adjusted (``adjust(state)``, e.g. LoRA fusion, on the
    stored values), cast, converted (``convert(layer)``, e.g. fp8) and, with ``offload``, packed into
    its home; its file pages are then released. The device never holds more than the resident parts
    and one layer in the run dtype."""
    model = reader.model
    layers = model.get_submodule(layers_name)
    device = torch.device(device)
    work = torch.device("cpu") if offload is not None and convert is None and adjust is None else device

    def place(keys, index=None):
        state = {k: t.to(work) for k, t in reader.read(keys).items()}
        if adjust is not None:
            state = adjust(state)
        if dtype is not None:
            state = {k: t.to(dtype) if t.is_floating_point() else t for k, t in state.items()}
        reader.assign(state)
        if index is not None and convert is not None:
            convert(layers[index])
        if offload is not None and index is not None:
            offload.home_layer(index)
        if work.type != "cpu" or (offload is not None and index is not None):
            reader.release(keys)  # (the rest's pages go once ``home_rest`` has copied them)

    prefix = layers_name + "."
    for i in range(len(layers)):
        place(reader.keys(f"{prefix}{i}."), i)
    place([k for k in reader.sources if not k.startswith(prefix)])
    model = reader.finish()
    if offload is not None:
        offload.home_rest()
        reader.release(list(reader.sources))
    return model
