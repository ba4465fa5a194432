"""Probe: the "keys" exchange (every rank's keys and values to every other rank) beside compute.

The question (docs/benchmarks-multi-gpu-2.md, sixteenth session): can the 2-GPU exchange of a block
run while the rank projects its queries, without slowing that projection? NCCL's all-gather runs
kernels on the SMs; copies into the peers' buffers through symmetric memory
(``torch.distributed._symmetric_memory``: each rank maps the others' buffers) run on the copy
engines ("push": each rank copies its part into its slot of every peer's buffer, between two
device-side barriers). For each way: the exchange alone, ``--gemms`` GEMMs of the query
projection's shape (the rank's tokens x 4,096 x 4,096, bf16) alone, and both at once (the
exchange on a side stream, the GEMMs on the caller's); "hidden" is the exchange time the overlap
saved (alone + GEMMs - both). The exchanged data is checked against NCCL's
``all_gather_into_tensor``. Median of ``--reps`` calls timed with CUDA events on rank 0 after
warm-ups, a host barrier before each call:

    torchrun --standalone --nproc_per_node 2 bench/symm_allgather.py [--mib 30,120] [--gemms 1,2]

The sizes of a 19B step on 2 GPUs: keys and values 30 MiB a rank at stage 1 (3,840 tokens, 1,920
a rank), 120 MiB at stage 2 (15,360; 7,680 a rank); the GEMMs take the tokens a rank that the size
gives. NVLink multicast stays off, as the machine sets it.
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.alltoall import timed  # noqa: E402
from bench.symm_alltoall import symmetric_world  # noqa: E402

WIDTH = 4096  # the 19B video stream's width (keys and values of that width per token)


def beside(exchange, work, side: torch.cuda.Stream):
    """``exchange`` on the ``side`` stream while ``work`` runs on the caller's; the caller waits for both."""
    main = torch.cuda.current_stream()
    side.wait_stream(main)
    with torch.cuda.stream(side):
        exchange()
    work()
    main.wait_stream(side)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", default="30,120", help="keys and values a rank sends, MiB")
    p.add_argument("--gemms", default="1,2", help="query-projection GEMMs beside the exchange")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    symm_mem, world, group, say = symmetric_world()
    n, me = world.size, world.rank
    side = torch.cuda.Stream()
    say("MiB a rank | tokens a rank | way | exchange us | GEMMs | GEMMs us | both us | hidden us", flush=True)
    for mib in (float(m) for m in args.mib.split(",")):
        elems = int(mib * 2**20 / 2)
        tokens = elems // (2 * WIDTH)
        mine = torch.randn(elems, device=world.device).to(torch.bfloat16)
        gathered = symm_mem.empty(n * elems, dtype=torch.bfloat16, device=world.device)
        handle = symm_mem.rendezvous(gathered, group.group_name)
        mine_at = [handle.get_buffer(j, (elems,), torch.bfloat16, me * elems) for j in range(n)]  # my slot at rank j
        want = torch.empty(n * elems, dtype=torch.bfloat16, device=world.device)
        dist.all_gather_into_tensor(want, mine)
        out = torch.empty_like(want)

        def nccl():
            dist.all_gather_into_tensor(out, mine)

        def push():
            handle.barrier(channel=0)  # every peer is done reading its buffer
            for step in range(n):
                mine_at[(me + step) % n].copy_(mine)  # own slot first, then the peers' (copy engines)
            handle.barrier(channel=1)  # every peer's part has arrived here

        gathered.zero_()
        push()
        nccl()
        torch.cuda.synchronize()
        checks = {"nccl": torch.equal(out, want), "push": torch.equal(gathered, want)}
        x = torch.randn(tokens, WIDTH, device=world.device).to(torch.bfloat16)
        w = torch.randn(WIDTH, WIDTH, device=world.device).to(torch.bfloat16)
        for k in (int(g) for g in args.gemms.split(",")):
            def gemms(k=k):
                for _ in range(k):
                    torch.mm(x, w)
            alone = timed(gemms, args.reps)
            for name, fn in (("nccl", nccl), ("push", push)):
                if not checks[name]:
                    say(f"{mib:>6.1f} | {tokens} | {name} | WRONG RESULT", flush=True)
                    continue
                exchange = timed(fn, args.reps)
                both = timed(lambda fn=fn, gemms=gemms: beside(fn, gemms, side), args.reps)
                say(f"{mib:>6.1f} | {tokens} | {name} | {exchange:.0f} | {k} | {alone:.0f} | {both:.0f} | "
                    f"{exchange + alone - both:.0f}", flush=True)
        del handle, gathered
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
