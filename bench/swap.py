"""Two models taking turns on a capped GPU: how long an evict + admit pair takes, against the raw copy.

Issue 10's 24 GiB runs spent 2.5-3 s in the warm call's text stage (the text encoder coming back
while the fp8 transformer leaves) where the copies alone take ~0.4 s at the measured 55 GB/s; this
isolates the hand-over. Two stand-in models (stacks of uint8 "layers" of the transformer's and
Gemma's sizes, homed in pinned host memory by ``Offloaded``) take turns, each admitted whole; the
card is capped with ``set_per_process_memory_fraction``. Per hand-over: wall time with the device
synchronised, against the same bytes copied host-to-device into a preallocated buffer. Run once
with the allocator's default segments and once with expandable segments (each in its own process,
set by ``PYTORCH_CUDA_ALLOC_CONF``, which the allocator reads when CUDA starts).

    python bench/swap.py                       # H100: 24 GiB cap, 17.9 and 20.6 GiB models
    python bench/swap.py --device cpu --gib 0.05 --cap-gib 0   # dry run
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fastltx.runtime.offload import Offloaded  # noqa: E402

GIB = 2**30


class Stack(nn.Module):
    """A stand-in model: ``layers`` layers of ``layer_bytes`` each (uint8 buffers)."""

    def __init__(self, layers: int, layer_bytes: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Module() for _ in range(layers))
        for layer in self.layers:
            layer.register_buffer("w", torch.empty(layer_bytes, dtype=torch.uint8))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    device = torch.device(args.device)
    if device.type == "cuda":
        if args.cap_gib:
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(args.cap_gib * GIB / total, 1.0), device.index or 0)
    models = []
    for gib in args.gib_list:
        stack = Stack(48, int(gib * GIB / 48))
        off = Offloaded(stack, device, stack.layers)
        off.home_all()
        models.append(off)
    rows = []
    for turn in range(args.turns):
        off, other = models[turn % 2], models[(turn + 1) % 2]
        sync(device)
        t = time.perf_counter()
        other.evict()
        off.admit()
        sync(device)
        rows.append(time.perf_counter() - t)
    for m in models:  # the raw copy below needs the room (the last model admitted still held it)
        m.evict()
    biggest = max(sum(g.nbytes for g in m.groups.values()) for m in models)
    target = torch.empty(biggest, dtype=torch.uint8, device=device)
    sync(device)
    t = time.perf_counter()
    for m in models:
        for g in m.groups.values():
            target[:g.nbytes].copy_(g.home, non_blocking=True)
    sync(device)
    copy = time.perf_counter() - t
    moved = sum(sum(g.nbytes for g in m.groups.values()) for m in models)
    return dict(expandable=args.expandable, handovers_s=rows, copy_both_s=copy, copy_gb_per_s=moved / copy / 1e9,
                models_gib=args.gib_list, cap_gib=args.cap_gib)


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--gib", default="17.9,20.6", help="the two models' sizes in GiB")
    p.add_argument("--cap-gib", type=float, default=24.0, help="per-process cap (0: none)")
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--expandable", action="store_true", help=argparse.SUPPRESS)  # recorded; set by the env
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="folder for swap.json")
    args = p.parse_args(argv)
    args.gib_list = [float(v) for v in args.gib.split(",")]
    if args.child:
        print("RESULT " + json.dumps(run(args)), flush=True)
        return []
    results = []
    for expandable in (False, True):
        cmd = [sys.executable, __file__, "--child", "--device", args.device, "--gib", args.gib,
               "--cap-gib", str(args.cap_gib), "--turns", str(args.turns)] + (["--expandable"] if expandable else [])
        env = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")}
        env["PYTORCH_CUDA_ALLOC_CONF"] = f"expandable_segments:{expandable}"  # read when CUDA starts
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(f"expandable={expandable}: FAILED ({(proc.stderr.strip().splitlines() or ['?'])[-1]})", flush=True)
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        results.append(r)
        turns = " ".join(f"{s:.2f}" for s in r["handovers_s"])
        print(f"expandable segments {'on ' if expandable else 'off'}: hand-overs {turns} s; both models copied "
              f"alone {r['copy_both_s']:.2f} s ({r['copy_gb_per_s']:.1f} GB/s)", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "swap.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
