"""Probe: the sequence-parallel all-to-all through symmetric memory against NCCL's, by message size.

A candidate for the exchanges' fixed cost at small steps (docs/benchmarks.md, issue 8): every rank
holds its send buffer in symmetric memory (``torch.distributed._symmetric_memory``: each rank maps
the others' buffers), and each rank pulls its part from every other rank's buffer between two
device-side barriers (``barrier``: a small kernel that signals the peers and waits for theirs).
Two ways to pull: "ce", one ``copy_`` per peer (contiguous device-to-device copies: the copy
engines, no SMs), and "sm", one ``torch.stack`` kernel reading every peer's part over NVLink. Both
run plain and recorded in a CUDA graph (the barriers and copies are kernels and memcpy nodes, so a
graph could hold the whole exchange: NCCL's collectives run eagerly between graph pieces here).
Each result is checked against NCCL's ``all_to_all_single`` on the same data. Median of ``--reps``
calls timed with CUDA events on rank 0 after warm-ups, with a host barrier before each call:

    torchrun --standalone --nproc_per_node 4 bench/symm_alltoall.py [--mib 7.5,22.5,30,90] [--reps 20]

NVLink multicast stays off (TORCH_SYMM_MEM_DISABLE_MULTICAST=1 is kept as the machine sets it).
The sizes of a 19B step on 4 GPUs: q/k/v 22.5 MiB a rank at 3,840 tokens (90 at 15,360), the
output 7.5 (30); on 2 GPUs 45 and 15 MiB (180, 60).
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.alltoall import timed  # noqa: E402
from fastltx.runtime.distributed import init_distributed  # noqa: E402


def symmetric_world():
    """(the symmetric-memory module, World, group, print on rank 0 only) for these probes, the card
    and versions printed."""
    import torch.distributed._symmetric_memory as symm_mem
    world = init_distributed()
    group = dist.group.WORLD
    if hasattr(symm_mem, "enable_symm_mem_for_group"):  # needed before a rendezvous in some versions
        symm_mem.enable_symm_mem_for_group(group.group_name)
    say = print if world.rank == 0 else (lambda *a, **k: None)
    say(f"{torch.cuda.get_device_name()} x {world.size}, NCCL {torch.cuda.nccl.version()}, torch {torch.__version__}",
        flush=True)
    return symm_mem, world, group, say


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", default="7.5,22.5,30,90")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    symm_mem, world, group, say = symmetric_world()
    n, me = world.size, world.rank
    for mib in (float(m) for m in args.mib.split(",")):
        elems = int(mib * 2**20 / 2) // n * n
        part = elems // n
        send = symm_mem.empty(elems, dtype=torch.bfloat16, device=world.device)
        send.copy_(torch.randn(elems, device=world.device))
        handle = symm_mem.rendezvous(send, group.group_name)
        want = torch.empty_like(send)
        dist.all_to_all_single(want, send)
        recv = torch.empty_like(send)
        chunks = recv.view(n, part)
        peers = [handle.get_buffer(j, (part,), torch.bfloat16, me * part) for j in range(n)]  # my part at rank j

        def ce():
            handle.barrier(channel=0)
            for step in range(n):
                j = (me + step) % n
                chunks[j].copy_(peers[j])
            handle.barrier(channel=1)

        def sm():
            handle.barrier(channel=0)
            torch.stack(peers, out=chunks)
            handle.barrier(channel=1)

        row = {"nccl": timed(lambda: dist.all_to_all_single(recv, send), args.reps)}
        for name, fn in (("ce", ce), ("sm", sm)):
            recv.zero_()
            fn()
            torch.cuda.synchronize()
            ok = torch.equal(recv, want)
            row[name] = timed(fn, args.reps) if ok else float("nan")
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()  # warm-up outside the capture
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            dist.barrier()
            with torch.cuda.graph(graph):
                fn()
            recv.zero_()
            dist.barrier()
            graph.replay()
            torch.cuda.synchronize()
            ok_graph = torch.equal(recv, want)
            row[name + " graph"] = timed(graph.replay, args.reps) if ok_graph else float("nan")
            del graph
        sent = part * 2 * (n - 1)
        say(f"  {mib:>6.1f} MiB a rank: " + "  ".join(f"{k} {v:7.1f} us" for k, v in row.items())
            + f"  (NCCL {sent / row['nccl'] / 1e3:.0f} GB/s sent a rank; nan: wrong result)", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
