"""An all-gather that runs beside the caller's work: each rank's part pushed into its peers' memory.

``push_start(send, group)`` (a custom op) begins gathering every rank's ``send`` (same shape on
every rank) and returns at once; ``gathered`` (eager, inside the op that reads the result) makes
the caller's stream wait for it and returns the gathered parts, in rank order along dim 0 (a view
of the group's buffer). Whatever the caller runs between the two overlaps the exchange: the "push"
keys exchange (fastltx/layers/sequence_parallel.py) projects its queries there and attends inside
its op ``fastltx::attend_pushed``, whose inputs are the queries and the token. The token is a zero
(one element of ``send``'s dtype): compiled code orders kernels by their data alone, so work meant
to overlap must read it (adding it changes nothing) or it may be scheduled before the start.

On CUDA each group holds a buffer in symmetric memory (``torch.distributed._symmetric_memory``:
every rank maps its peers' buffers). ``push_start`` copies ``send`` into this rank's slot of its
own buffer on the caller's stream (``send`` is not read after it returns: compiled code may reuse
its memory at once), then, on a side stream that waits for the caller's: a device-side barrier
(every peer has reached its own ``push_start``, so it is done reading the buffer since its last
``gathered``), the slot copied into this rank's slot of every peer's buffer (plain
device-to-device copies, which the copy engines run without taking the SMs the caller's work
needs), a second barrier (every peer's part has arrived). ``gathered`` makes the caller's
stream wait for the side stream and returns a view of the buffer, valid until the next
``push_start`` on the group: use it before then. Nothing waits on the host, so a CUDA graph
records the whole exchange (no graph piece ends here, unlike the NCCL collectives of
``fastltx.runtime.distributed``). bench/symm_allgather.py measured it against NCCL's all-gather
(docs/benchmarks-multi-gpu-2.md, sixteenth session): 453 against 598 us alone at 126 MiB a rank
on 2 x H200, 307 us of it hidden behind one GEMM of the query projection's size.

The view never leaves an op: compiled code takes a custom op's result for its own memory and may
place its later tensors there once it is dead (the feed-forward's hidden went into the buffer when
an op returned the view, before the twentieth session), and the next push would overwrite any of
them that outlives the block (the nineteenth session's pushed all-to-all, not kept, met that: wrong
frames, every test passing).

A buffer is made (a rendezvous of the group's ranks) at the first exchange larger than the
group's buffers so far, outside any recording (a recording's warm-up call, which runs first, makes
it); every rank of a group sees the same sizes in the same order, so they make the same buffers.
Buffers are kept: graphs recorded earlier read them. (The thirteenth session's symmetric-memory
workspace hung in a rendezvous over 4 ranks after only 2 of them had made one over their own
group: PyTorch keys a rendezvous with one counter per process. "auto" pushes over 2-rank groups
only, which the guidance layouts' replicas make together. A buffer over ranks that have made
different numbers of them raises instead, on every rank: ``_check_even``.)

Each buffer is allocated on every rank, the allocations agreed on (with the counts above), and only
then does every rank enter the rendezvous; a failure raises ``SymmetricMemoryError`` on every rank.
"auto" asks ``push_usable`` first (a 1 MiB buffer made over the group, every rank's outcome
gathered): where symmetric memory cannot be made on every rank (a container without the IPC that
maps the peers' memory), it warns (the group's first rank and the failing ones) and exchanges
through NCCL ("keys") instead. A named "push" raises the error at its first exchange.

Elsewhere (CPU tensors, gloo: for tests of the same code path) ``push_start`` all-gathers at once
into the group's buffer and ``gathered`` returns it. ``push_finish``: ``gathered`` for eager callers
(the GPU tests).
"""

import functools
import math
import warnings
from dataclasses import dataclass, field

import torch

from fastltx.runtime.distributed import DEFAULT_TIMEOUT, Group, gather_into, resolve_process_group

# A device-side barrier that waits longer than the process groups' timeout stops the process with a
# CUDA error (a peer that failed or hung) instead of spinning forever.
BARRIER_TIMEOUT_MS = int(DEFAULT_TIMEOUT.total_seconds() * 1000)


@dataclass
class _Buffer:
    whole: torch.Tensor  # (ranks x bytes a rank) uint8: slot j (of the bytes a call sends) holds rank j's part
    handle: object | None  # the symmetric-memory rendezvous handle; None off CUDA
    slots: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # bytes -> this rank's slot at each rank

    def targets(self, nbytes: int) -> list[torch.Tensor]:
        """This rank's slot in every rank's buffer (its own included), for parts of ``nbytes``."""
        if nbytes not in self.slots:
            me, ranks = self.handle.rank, self.handle.world_size
            with torch.inference_mode(False):  # (views that calls in and out of inference mode write)
                self.slots[nbytes] = [self.handle.get_buffer(j, (nbytes,), torch.uint8, me * nbytes)
                                      for j in range(ranks)]
        return self.slots[nbytes]


_buffers: dict[str, list[_Buffer]] = {}  # group name -> its buffers, in the order they were made
_streams: dict[torch.device, torch.cuda.Stream] = {}


def _buffer(group_name: str, nbytes: int, ranks: int, device: torch.device) -> _Buffer:
    """The group's first buffer that holds ``ranks`` parts of ``nbytes`` bytes (made when none does;
    never an inference tensor, which calls outside inference mode could not write)."""
    held = _buffers.setdefault(group_name, [])
    for b in held:
        if b.whole.numel() >= ranks * nbytes:
            return b
    with torch.inference_mode(False):
        return _new_buffer(held, group_name, nbytes, ranks, device)


def _new_buffer(held: list[_Buffer], group_name: str, nbytes: int, ranks: int, device: torch.device) -> _Buffer:
    if device.type != "cuda":
        held.append(_Buffer(torch.empty(ranks * nbytes, dtype=torch.uint8, device=device), None))
        return held[-1]
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError("a push buffer cannot be made inside a CUDA graph recording; "
                           "run the call once unrecorded first")
    import torch.distributed._symmetric_memory as symm_mem
    if not held and hasattr(symm_mem, "enable_symm_mem_for_group"):  # needed before a rendezvous in some versions
        with warnings.catch_warnings():  # (deprecated in others, which say so at every group)
            warnings.simplefilter("ignore", FutureWarning)
            symm_mem.enable_symm_mem_for_group(group_name)
    try:  # allocated here, agreed on (``_check_even``), and only then the rendezvous every rank enters
        whole, failed = symm_mem.empty(ranks * nbytes, dtype=torch.uint8, device=device), None
    except (RuntimeError, OSError) as e:  # (a driver without the shareable handles, say; or out of memory)
        whole, failed = None, e
    _check_even(group_name, device, failed)
    try:
        handle = symm_mem.rendezvous(whole, group_name)
    except (RuntimeError, OSError) as e:  # (a container without the IPC that maps the peers' memory, say)
        raise _unmade(e) from e
    held.append(_Buffer(whole, handle))
    global _made
    _made += 1
    return held[-1]


_made = 0  # symmetric-memory rendezvous this process has made (every one is made by ``_new_buffer``)


class SymmetricMemoryError(RuntimeError):
    """Symmetric memory could not be made here; ``why``: the short reason (this rank's error, or
    that another rank failed)."""

    def __init__(self, message: str, why: str = ""):
        super().__init__(message)
        self.why = why or message


def _unmade(cause: BaseException | str) -> SymmetricMemoryError:
    why = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else cause
    return SymmetricMemoryError(
        f"the \"push\" sequence exchange needs CUDA symmetric memory between this machine's GPUs, and making it "
        f"failed here ({why}); exchange through NCCL instead: --sequence-exchange keys (or heads), "
        "load_pipeline(..., sequence_exchange=\"keys\"), or the transformer's sequence_exchange", why)


def _check_even(group_name: str, device: torch.device, failed: BaseException | None = None) -> None:
    """Raise unless every rank of the group has made as many rendezvous as this one, and allocated
    the new buffer (``failed``: this rank's allocation error, or None). PyTorch keys a rendezvous's
    exchange through the group's store with one counter per process, which every group's rendezvous
    advances: after some ranks made more (a push over 2 of 4 ranks), a rendezvous over all 4 waits
    forever for keys that never come; a rank that could not allocate would leave the others waiting
    in the rendezvous. Every rank raises (one small gather a buffer made): ``SymmetricMemoryError``
    where symmetric memory could not be made; where a rank ran out of memory, that rank's error
    there and a RuntimeError elsewhere (not a reason to exchange otherwise)."""
    group = resolve_process_group(group_name)
    status = 0 if failed is None else 2 if isinstance(failed, torch.OutOfMemoryError) else 1
    every = torch.empty(2 * group.size(), dtype=torch.int64, device=device)
    gather_into(every, torch.tensor([_made, status], dtype=torch.int64, device=device), group)
    counts, statuses = every.view(-1, 2).T.tolist()
    if len(set(counts)) > 1:
        raise RuntimeError(f"a push buffer cannot be made over this group: its ranks have made {counts} symmetric-memory "
                           "buffers before (a rendezvous would hang); make the pushes over smaller groups alike on "
                           "every rank, or take another exchange (the transformer's sequence_exchange)")
    if 2 in statuses:
        if status == 2:
            raise failed
        raise RuntimeError("a push buffer could not be made: another rank ran out of GPU memory")
    if 1 in statuses:
        raise _unmade(failed if failed is not None else "another rank could not allocate it") from failed


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    if device not in _streams:
        _streams[device] = torch.cuda.Stream(device)
    return _streams[device]


def _bytes(send: torch.Tensor) -> torch.Tensor:
    return send.reshape(-1).view(torch.uint8)


@torch.library.custom_op("fastltx::push_start", mutates_args=())
def _push_start(send: torch.Tensor, group_name: str, ranks: int) -> torch.Tensor:
    data = _bytes(send.contiguous())
    n = data.numel()
    b = _buffer(group_name, n, ranks, send.device)
    if b.handle is None:  # off CUDA: gathered now
        gather_into(b.whole[:ranks * n], data, resolve_process_group(group_name))
        return send.new_zeros(1)
    targets = b.targets(n)
    me = b.handle.rank
    targets[me].copy_(data)  # on the caller's stream: ``send`` is not read after this call returns
    caller, side = torch.cuda.current_stream(send.device), _side_stream(send.device)
    side.wait_stream(caller)
    with torch.cuda.stream(side):
        b.handle.barrier(channel=0, timeout_ms=BARRIER_TIMEOUT_MS)  # every peer is done with its buffer
        for step in range(1, ranks):
            targets[(me + step) % ranks].copy_(targets[me])  # from this rank's slot to the peers'
        b.handle.barrier(channel=1, timeout_ms=BARRIER_TIMEOUT_MS)  # every peer's part is here
    return send.new_zeros(1)


@_push_start.register_fake
def _(send: torch.Tensor, group_name: str, ranks: int) -> torch.Tensor:
    return send.new_empty(1)


def gathered(token: torch.Tensor, shape: list[int], group_name: str, ranks: int) -> torch.Tensor:
    """Eager: make the current stream wait for the push that returned ``token`` and return the
    gathered parts of ``shape`` (a view of the group's buffer). Call it inside a custom op or eager
    code only, and let nothing but that op's own work read the view (see the module's text)."""
    n = math.prod(shape) * token.element_size()
    b = _buffer(group_name, n, ranks, token.device)
    if b.handle is not None:
        torch.cuda.current_stream(token.device).wait_stream(_side_stream(token.device))
    return b.whole[:ranks * n].view(token.dtype).view(ranks * shape[0], *shape[1:])


@functools.cache
def push_available() -> bool:
    """Whether "push" can run between this machine's GPUs: CUDA symmetric memory in this torch,
    peer access between every two visible GPUs (every pair, not only this rank's: every rank of the
    machine must give the same answer, or some would push while others gather), and a process world
    no larger than this machine's GPU count (larger, it spans machines). Not checked: that
    symmetric memory can be made in this container (``push_usable`` makes it)."""
    if not torch.cuda.is_available():
        return False
    try:
        import torch.distributed._symmetric_memory as symm_mem
    except ImportError:
        return False
    if not (hasattr(symm_mem, "empty") and hasattr(symm_mem, "rendezvous")):
        return False
    n = torch.cuda.device_count()
    # a world larger than this machine's GPUs spans machines (one process a GPU): no peer memory there
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return 2 <= n and world <= n and all(torch.cuda.can_device_access_peer(i, j)
                                         for i in range(n) for j in range(n) if i != j)


PROBE_BYTES = 2**20  # a rank's part of the buffer ``push_usable`` makes (kept, as every buffer is)
_usable: dict[str, tuple[object, bool]] = {}  # group name -> (its process group, every rank made symmetric memory)


def push_usable(group: Group, device: torch.device | str) -> bool:
    """Whether the ranks of ``group`` can push to each other: its first buffer (``PROBE_BYTES`` a
    rank; a rendezvous) made now, and True only where every rank made it (each rank's outcome
    gathered over the group, so all of them answer alike). A collective: every rank of the group
    calls it, together, eagerly (refused inside a CUDA graph recording or compiled code); answered
    once a group (later calls communicate nothing; a new group under an old name, after the process
    groups were destroyed and made again, is asked again). Where it answers False, the group's first
    rank warns, and every rank that failed (naming its cause). Only a failure to make symmetric
    memory counts: other errors (out of memory, NCCL, ranks with uneven rendezvous counts) raise.
    Not caught: a rendezvous that fails on some ranks while the others wait in it (the GPUs of one
    machine fail alike: the same container, the same driver)."""
    name = group.group.group_name
    held = _usable.get(name)
    if held is None or held[0] is not group.group:
        device = torch.device(device)
        if torch.compiler.is_compiling() or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            raise RuntimeError("push_usable runs eagerly: plan the sequence outside compiled code and recordings")
        try:
            _buffer(name, PROBE_BYTES, group.size, device)
            error = None
        except SymmetricMemoryError as e:
            error = e
        every = torch.empty(group.size, dtype=torch.int64, device=device)
        gather_into(every, torch.tensor([error is None], dtype=torch.int64, device=device), group.group)
        held = _usable[name] = (group.group, bool(every.min()))
        if not held[1] and (error is not None or group.rank == 0):
            why = error.why if error is not None else "another rank could not make it"
            warnings.warn("the \"push\" sequence exchange needs CUDA symmetric memory between the GPUs, which "
                          f"could not be made here ({why}); exchanging through NCCL (\"keys\") instead",
                          RuntimeWarning, stacklevel=2)
    return held[1]


def push_start(send: torch.Tensor, group) -> torch.Tensor:
    """Begin gathering every rank's ``send`` over ``group`` (a ``fastltx.runtime.distributed.Group``);
    returns the token ``gathered`` takes (a zero of ``send``'s dtype: see above)."""
    return torch.ops.fastltx.push_start(send, group.group.group_name, group.size)


def push_finish(token: torch.Tensor, shape: torch.Size | list[int], group) -> torch.Tensor:
    """Eager: the parts of ``shape`` (``send``'s) that ``push_start`` began gathering, in rank order
    along dim 0 (``gathered``: a view of the group's buffer, overwritten by the group's next push)."""
    return gathered(token, list(shape), group.group.group_name, group.size)
