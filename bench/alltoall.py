"""Probe: how fast NCCL's all-to-all moves the sequence-parallel exchanges, by message size.

Each rank's send buffer holds ``--mib`` MiB (bf16), split evenly among the ranks (the part for itself
stays). Median of ``--reps`` calls timed with CUDA events on rank 0 after warm-ups; prints the
microseconds and the rate each rank sends at (bytes to the other ranks / time). NCCL's settings
come from its environment (NCCL_NCHANNELS_PER_PEER, NCCL_P2P_NVL_CHUNKSIZE, ...), read when the
communicator is made, so compare settings across launches, and run the one to compare against a
second time: on a fresh machine the first launch was slower (docs/benchmarks.md, ninth session):

    torchrun --standalone --nproc_per_node 2 bench/alltoall.py [--mib 4,15,45,60,180] [--reps 20]

The sizes of a 19B step (2 GPUs): q/k/v 45 MiB a rank at 3,840 tokens (180 at 15,360), the output 15 MiB (60).
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timeline import nccl_settings  # noqa: E402
from fastltx.runtime.distributed import init_distributed  # noqa: E402


def timed(fn, reps: int) -> float:
    """Median microseconds of ``fn()`` (CUDA events on this rank) over ``reps`` calls after 3
    warm-ups, a host barrier before each call."""
    times = []
    for i in range(reps + 3):
        dist.barrier()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", default="4,15,45,60,180")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    world = init_distributed()
    n = world.size
    if world.rank == 0:
        print(f"{torch.cuda.get_device_name()} x {n}, NCCL {torch.cuda.nccl.version()}; {nccl_settings()}", flush=True)
    for mib in (float(m) for m in args.mib.split(",")):
        elems = int(mib * 2**20 / 2) // n * n
        send = torch.randn(elems, device=world.device).to(torch.bfloat16)
        recv = torch.empty_like(send)
        us = timed(lambda: dist.all_to_all_single(recv, send), args.reps)
        sent = send.numel() * 2 * (n - 1) / n
        if world.rank == 0:
            print(f"  {mib:>7.1f} MiB a rank: {us:>8.1f} us  {sent / us / 1e3:>6.1f} GB/s sent a rank", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
