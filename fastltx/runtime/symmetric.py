"""The sequence-parallel collectives through CUDA symmetric memory: work a CUDA graph holds whole.

Each rank of a group holds a workspace in symmetric memory (``torch.distributed._symmetric_memory``:
every rank maps the others' workspaces into its address space). An exchange is: this rank copies
what it sends into its workspace; a device-side barrier (a small kernel that signals the peers and
waits for their signals); this rank pulls what it receives out of its peers' workspaces, by one
kernel reading them over NVLink or, for large parts on more than two ranks, one copy per peer on
the copy engines; a second barrier, after which no peer reads this workspace any more, so the next
exchange may overwrite it. All of it is kernels and copies on the current stream: nothing waits on
the host, and a CUDA graph records the exchange as it is, where NCCL's collectives end a graph
piece (``fastltx.runtime.cuda_graph.between_pieces``). bench/symm_alltoall.py measured the pulls
against NCCL's all-to-all (docs/benchmarks-multi-gpu.md, twelfth session).

A group's workspace is made (a collective rendezvous of the group's ranks) at its first exchange
and replaced by a larger one when an exchange needs more, outside any recording (a recording's
warm-up call, which runs first, makes it). Outgrown workspaces are kept: graphs recorded earlier
read them.
"""

import torch

# Pull each peer's part with a copy per peer (the copy engines) instead of one kernel when the group
# has more than 2 ranks and a part is at least this large. 4 x H200, graphed, us a call: 7.5 MiB a
# rank (1.9 a part) kernel 46 / copies 59; 22.5 MiB (5.6 a part) 115 / 99; 90 MiB 431 / 241. On 2
# ranks the kernel was faster at every size measured (1 to 180 MiB a rank).
COPY_ENGINE_MIN_PART = 4 * 2**20

_workspaces: dict[str, list] = {}  # group name -> [(workspace tensor, its rendezvous handle)], growing


def _workspace(group_name: str, nbytes: int, device: torch.device):
    """The group's symmetric-memory handle, with a workspace of at least ``nbytes`` bytes."""
    held = _workspaces.setdefault(group_name, [])
    if held and held[-1][0].numel() >= nbytes:
        return held[-1][1]
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError("a symmetric-memory workspace cannot grow inside a CUDA graph recording; "
                           "run the call once unrecorded first")
    import torch.distributed._symmetric_memory as symm_mem
    if not held and hasattr(symm_mem, "enable_symm_mem_for_group"):  # needed before a rendezvous (torch 2.11)
        symm_mem.enable_symm_mem_for_group(group_name)
    size = max(nbytes, 2 * held[-1][0].numel() if held else 0)
    size = -(-size // 2**20) * 2**20
    buffer = symm_mem.empty(size, dtype=torch.uint8, device=device)
    held.append((buffer, symm_mem.rendezvous(buffer, group_name)))
    return held[-1][1]


def _exchange(x: torch.Tensor, group_name: str, size: int, scatter: bool) -> torch.Tensor:
    """``scatter``: part j of dim 0 of ``x`` goes to rank j (all-to-all); else all of ``x`` goes to
    every rank (all-gather). The result is the parts received, in rank order along dim 0."""
    rows = x.shape[0] // size if scatter else x.shape[0]
    part = (rows, *x.shape[1:])
    numel = x[:rows].numel()
    handle = _workspace(group_name, x.numel() * x.element_size(), x.device)
    me = handle.rank
    out = x.new_empty((size * rows, *x.shape[1:]))
    handle.get_buffer(me, tuple(x.shape), x.dtype).copy_(x)
    offset = me * numel if scatter else 0
    sources = [handle.get_buffer(j, part, x.dtype, offset) for j in range(size)]
    sources[me] = x[me * rows:(me + 1) * rows] if scatter else x  # this rank's own part, read locally
    handle.barrier(channel=0)
    chunks = out.view(size, *part)
    if size > 2 and numel * x.element_size() >= COPY_ENGINE_MIN_PART:
        for step in range(size):
            j = (me + step) % size
            chunks[j].copy_(sources[j])
    else:
        torch.stack(sources, out=chunks)
    handle.barrier(channel=1)
    return out


@torch.library.custom_op("fastltx::symm_all_to_all", mutates_args=())
def _symm_all_to_all(x: torch.Tensor, group_name: str, size: int) -> torch.Tensor:
    return _exchange(x, group_name, size, scatter=True)


@_symm_all_to_all.register_fake
def _(x: torch.Tensor, group_name: str, size: int) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("fastltx::symm_all_gather", mutates_args=())
def _symm_all_gather(x: torch.Tensor, group_name: str, size: int) -> torch.Tensor:
    return _exchange(x, group_name, size, scatter=False)


@_symm_all_gather.register_fake
def _(x: torch.Tensor, group_name: str, size: int) -> torch.Tensor:
    return x.new_empty((size * x.shape[0], *x.shape[1:]))


def all_to_all(x: torch.Tensor, group_name: str, size: int) -> torch.Tensor:
    """``fastltx.runtime.distributed.all_to_all`` through symmetric memory (CUDA tensors only)."""
    return torch.ops.fastltx.symm_all_to_all(x, group_name, size)


def all_gather(x: torch.Tensor, group_name: str, size: int) -> torch.Tensor:
    """``fastltx.runtime.distributed.all_gather`` through symmetric memory (CUDA tensors only)."""
    return torch.ops.fastltx.symm_all_gather(x, group_name, size)
