"""Several processes for one generation: process groups, layouts and the few collectives used.

A ``World`` is the processes of one generation (one per GPU, started by ``torchrun``; NCCL on GPUs,
gloo on the CPU). Its ranks are laid out as ``G`` guidance replicas times ``S`` sequence shards
(rank = g * S + s): the passes of a guided step are split over the replicas (guidance / CFG
parallelism) and each pass's video tokens over the shards of a replica (Ulysses sequence
parallelism). A layout exists for every divisor G of the world size; a step picks the one that
fits its number of passes (``World.layout``); a single-pass step uses all ranks as shards unless its
pass is too small for that (``World.sequence_for``).

``init_distributed`` is the one place that reads the ``torchrun`` environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT); everything else receives the ``World`` or a ``Group`` explicitly.
"""

import contextlib
import datetime
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
import torch.distributed as dist

from fastltx.runtime.cuda_graph import between_pieces
from fastltx.runtime.memory import concrete_device

DEFAULT_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Group:
    """A process group and this process's place in it; ``size == 1`` means no communication."""

    group: dist.ProcessGroup | None = None
    rank: int = 0
    size: int = 1


SINGLE = Group()


@dataclass(frozen=True)
class Layout:
    """G guidance replicas x S sequence shards: ``guidance`` links the ranks holding the same shard
    of different replicas, ``sequence`` the shards of this rank's replica (``guidance.rank`` is the
    replica's index)."""

    guidance: Group
    sequence: Group


@dataclass(frozen=True)
class World:
    """The processes of one generation; rank 0 is the one that writes outputs."""

    rank: int
    size: int
    device: torch.device
    group: dist.ProcessGroup | None
    layouts: dict[int, Layout] = field(default_factory=dict, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sequence(self) -> Group:
        """All ranks as sequence shards (single-pass steps)."""
        return self.layouts[1].sequence

    def sequence_for(self, tokens: int, minimum: int) -> Group:
        """The sequence group for one pass of ``tokens`` video tokens: all ranks as shards unless
        that leaves a shard fewer than ``minimum`` tokens; then the layout with the most shards that
        does not (down to one: every rank runs the whole pass), its replicas all running the same
        pass, which gives every rank the same result without any exchange between replicas."""
        shards = [self.size // g for g in self.layouts]
        return self.layouts[self.size // max([s for s in shards if tokens // s >= minimum] or [1])].sequence

    def layout(self, passes: int) -> Layout:
        """The layout for a step of ``passes`` batched passes: the most guidance replicas that the
        passes can occupy (the largest divisor of the world size not above ``passes``)."""
        return self.layouts[max(g for g in self.layouts if g <= max(passes, 1))]

    def agree(self, fn: Callable, errors: tuple[type[BaseException], ...] = (ValueError,)):
        """Run ``fn`` on every rank; if it raised one of ``errors`` on any rank, every rank raises the
        lowest such rank's error (so bad input fails everywhere with the same message, no hang)."""
        error, result = None, None
        try:
            result = fn()
        except errors as e:
            error = e
        if self.size > 1:
            outcomes = [None] * self.size
            dist.all_gather_object(outcomes, _portable(error), group=self.group)
            failed = [r for r, e in enumerate(outcomes) if e is not None]
            if failed:
                raise error if failed[0] == self.rank else outcomes[failed[0]]
        if error is not None:
            raise error
        return result

    def from_main(self, fn: Callable):
        """``fn()`` run on rank 0 alone, its result on every rank: a dataclass whose fields are tensors
        on this world's device or None (the text contexts: one encoding instead of one a rank, so no
        rank waits at the first step for the slowest one's encoding, and the other ranks never load
        the model behind ``fn``). Whatever ``fn`` raised on rank 0 is raised on every rank (there,
        as a copy) instead of leaving them waiting."""
        if self.size == 1:
            return fn()
        result, error, shared = None, None, None
        if self.main:
            try:
                result = fn()
            except Exception as e:  # noqa: BLE001  (any failure: every rank must hear of it)
                error = e
            parts = {} if error is not None else {f.name: getattr(result, f.name) for f in fields(result)}
            shapes = {name: None if t is None else (tuple(t.shape), t.dtype) for name, t in parts.items()}
            shared = (_portable(error), type(result), shapes)
        failure, kind, shapes = self.broadcast(shared)
        if failure is not None:
            raise error if self.main else failure
        source = dist.get_global_rank(self.group, 0)
        values = {}
        for name, spec in shapes.items():
            if spec is None:
                values[name] = None
                continue
            t = getattr(result, name).contiguous() if self.main else torch.empty(spec[0], dtype=spec[1], device=self.device)
            dist.broadcast(t, src=source, group=self.group)
            values[name] = t
        return result if self.main else kind(**values)

    def broadcast(self, obj):
        """Rank 0's value of a small picklable object, on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.group, 0), group=self.group)
        return box[0]


def _portable(error: BaseException | None) -> BaseException | None:
    """The error itself when it survives pickling, else a ValueError with its message."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001  (an exception class whose __init__ takes other arguments)
        return ValueError(str(error))


def world_from_ranks(ranks: list[int] | None = None, device: torch.device | str | None = None) -> World | None:
    """A World over ``ranks`` of the initialised default group (default: all of them).

    Every process of the default group calls this, with the same ranks and in the same order
    (process groups are made collectively); the processes outside ``ranks`` get None.
    """
    everyone = dist.get_world_size()
    ranks = list(range(everyone)) if ranks is None else sorted(ranks)
    me, size = dist.get_rank(), len(ranks)
    group = dist.group.WORLD if size == everyone else dist.new_group(ranks)
    divisors = [g for g in range(1, size + 1) if size % g == 0]
    made = {}  # G -> (group of each replica, group of each shard index); every process makes them all
    for g in divisors:
        s = size // g
        if 1 < g < size:
            made[g] = ([_group([ranks[r] for r in range(size) if r // s == i], me) for i in range(g)],
                       [_group([ranks[r] for r in range(size) if r % s == j], me) for j in range(s)])
    if me not in ranks:
        return None
    rank = ranks.index(me)
    whole = Group(group, rank, size)
    layouts = {}
    for g in divisors:
        if g in made:
            replicas, shards = made[g]
            s = size // g
            layouts[g] = Layout(guidance=shards[rank % s], sequence=replicas[rank // s])
        else:  # one replica of all ranks, or one replica per rank
            layouts[g] = Layout(guidance=whole if g == size else SINGLE, sequence=whole if g == 1 else SINGLE)
    if device is None:
        device = concrete_device("cuda") if dist.get_backend(group) == "nccl" else "cpu"
    return World(rank, size, torch.device(device), group, layouts)


def _group(members: list[int], me: int) -> Group | None:
    pg = dist.new_group(members)
    return Group(pg, members.index(me), len(members)) if me in members else None


def init_distributed(world_size: int | None = None, device: torch.device | str | None = None,
                     timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> World:
    """Join the processes ``torchrun`` started (one per GPU) and return their World.

    ``device``: "cuda" (the default when CUDA is available: this process's GPU is cuda:LOCAL_RANK,
    NCCL between them) or "cpu" (gloo; for tests and CPU runs). ``world_size``, when given, must
    equal the number of processes started. Reuses an already initialised default group.
    """
    env_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size is not None and world_size != env_size:
        raise ValueError(f"world_size={world_size} needs {world_size} processes started by torchrun "
                         f"(torchrun --nproc_per_node {world_size} your_script.py); this one has WORLD_SIZE={env_size}")
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"process {local} of this node has no GPU ({torch.cuda.device_count()} visible)")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        if env_size == 1 and "MASTER_ADDR" not in os.environ:  # a single process: a private store
            store = dist.HashStore()
            dist.init_process_group("nccl" if kind == "cuda" else "gloo", store=store, rank=0, world_size=1,
                                    timeout=timeout)
        else:
            dist.init_process_group("nccl" if kind == "cuda" else "gloo", timeout=timeout,
                                    device_id=device if kind == "cuda" else None)
    return world_from_ranks(None, device)


def torchrun_command(processes: int, argv: list[str]) -> list[str]:
    """The command that runs ``fastltx <argv>`` in ``processes`` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "fastltx", *argv]


def launch_torchrun(processes: int, argv: list[str]) -> int:
    """Run ``fastltx <argv>`` in ``processes`` processes through torchrun; its exit status. The
    environment passes on unchanged (NCCL settings included); Ctrl-C or SIGTERM stops them all."""
    proc = subprocess.Popen(torchrun_command(processes, argv))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()  # torchrun passes it on to its processes
        proc.wait()
        raise


# ------------------------------------------------------------------------------------------ collectives
# The collectives are custom ops: torch.compile keeps them as calls, run from Python, where
# ``between_pieces`` cuts a CUDA graph recording around them (the graphs hold only the kernels
# between the collectives: NCCL inside the graphs stalled at full size, docs/benchmarks.md). They are
# launched synchronously, which since torch 2.8 puts the NCCL kernel on the current stream itself:
# the host does not wait, and the next kernel starts right after it (launched on NCCL's own stream
# instead, a collective between graph pieces left the GPU idle ~35 us until the next piece started;
# 4 x H200). One compiled form serves plain calls and recordings. ``functional_collectives()``
# selects PyTorch's functional collectives instead, traced into the compiled graph (to compare;
# Dynamo guards on the choice).
_functional = False


@contextlib.contextmanager
def functional_collectives():
    """Collectives called inside are PyTorch's functional collectives (traced into compiled graphs)."""
    global _functional
    before, _functional = _functional, True
    try:
        yield
    finally:
        _functional = before


def _funcol():
    """PyTorch's functional collectives, imported on first use."""
    import torch.distributed._functional_collectives as funcol
    return funcol


def _ready(t: torch.Tensor) -> torch.Tensor:
    return t.wait() if isinstance(t, _funcol().AsyncCollectiveTensor) else t


@torch.library.custom_op("fastltx::all_to_all", mutates_args=())
def _all_to_all(x: torch.Tensor, group_name: str) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    group = resolve_process_group(group_name)
    between_pieces(lambda: dist.all_to_all_single(out, x, group=group), x, out)
    return out


@_all_to_all.register_fake
def _(x: torch.Tensor, group_name: str) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("fastltx::all_gather", mutates_args=())
def _all_gather(x: torch.Tensor, group_name: str, size: int) -> torch.Tensor:
    x = x.contiguous()
    out = x.new_empty((size * x.shape[0], *x.shape[1:]))
    group = resolve_process_group(group_name)
    between_pieces(lambda: gather_into(out, x, group), x, out)
    return out


@_all_gather.register_fake
def _(x: torch.Tensor, group_name: str, size: int) -> torch.Tensor:
    return x.new_empty((size * x.shape[0], *x.shape[1:]))


def gather_into(out: torch.Tensor, x: torch.Tensor, group: dist.ProcessGroup) -> None:
    """Every rank's ``x`` into ``out`` (concatenated along dim 0), now, on the current stream."""
    # torch 2.13 renamed the all-gather into one tensor (the old name warns); 2.11 has only the old one
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, x, group=group)


def resolve_process_group(name: str) -> dist.ProcessGroup:
    """The process group of a group name (as custom ops receive it)."""
    from torch.distributed.distributed_c10d import _resolve_process_group as resolve
    return resolve(name)


def all_to_all(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Split dim 0 into ``group.size`` equal parts, send part i to rank i; dim 0 of the result is
    ordered by source rank."""
    if not _functional:
        return torch.ops.fastltx.all_to_all(x, group.group.group_name)
    return _ready(_funcol().all_to_all_single(x.contiguous(), None, None, group.group))


def all_gather(x: torch.Tensor, group: Group) -> torch.Tensor:
    """Every rank's ``x`` concatenated along dim 0, in rank order."""
    if not _functional:
        return torch.ops.fastltx.all_gather(x, group.group.group_name, group.size)
    funcol = _funcol()
    # torch 2.13 renamed the functional all-gather (the old name warns); 2.11 has only the old one
    gather = getattr(funcol, "all_gather_single", None) or funcol.all_gather_tensor
    return _ready(gather(x.contiguous(), 0, group.group))
