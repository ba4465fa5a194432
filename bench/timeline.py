"""Where a GPU step's time goes on the timeline: busy, collectives, and idle gaps by cause.

``traced(step, path)`` runs ``step`` under the profiler (after one call outside it) and writes the
Chrome trace to ``path``; ``timeline_summary`` reads such a trace: from the first kernel's start to
the last one's end (the span), the time some kernel ran (busy: the union of the kernels'
intervals, every stream), the NCCL kernels' time (which includes waiting for the other ranks) and
how much of it other kernels ran beside (*beside*: on other streams, the exchanges overlapped),
and the idle gaps, split by cause: *host* when the kernel that ends the gap was launched (its
launch call, ``cudaLaunchKernel``, ``cuLaunchKernel(Ex)`` or ``cudaGraphLaunch``, returned) after the GPU went idle, so
the GPU waited for the host; *other* for the rest (waiting on another stream or an event, or
inside a graph), and the kernels' time by kind (GEMM, attention, NCCL, other: ``kernel_kind``, also
used by bench/distributed.py's profile tables). Step times from such a trace are the profiled ones:
the profiler adds host work.
"""

import bisect
import json
import os
from pathlib import Path

import torch


def traced(step, path: str, calls: int = 2) -> dict:
    """``calls`` calls of ``step`` under the profiler, back to back (after one call outside it);
    the trace goes to ``path``; returns ``timeline_summary`` of it with ``calls``."""
    from torch.profiler import ProfilerActivity, profile
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            step()
        torch.cuda.synchronize()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(path)
    return timeline_summary(json.loads(Path(path).read_text()), calls)


def timeline_summary(trace: dict, calls: int = 1) -> dict:
    """Milliseconds per call: span, busy, nccl, idle_host, idle_other (see the module's docstring),
    the number of kernels per call, and ``kinds``: kernel milliseconds per call by ``kernel_kind``."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    kernels = sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"])
    if not kernels:
        return dict(span=0.0, busy=0.0, nccl=0.0, nccl_beside=0.0, idle_host=0.0, idle_other=0.0, kernels=0,
                    kinds={})
    launched = {e["args"]["correlation"]: e["ts"] + e.get("dur", 0) for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    start = end = kernels[0]["ts"]
    busy = idle_host = idle_other = 0.0
    for k in kernels:
        if k["ts"] > end:
            gap = k["ts"] - end
            if launched.get(k.get("args", {}).get("correlation"), float("-inf")) > end:
                idle_host += gap
            else:
                idle_other += gap
        stop = k["ts"] + k["dur"]
        busy += max(0.0, stop - max(end, k["ts"]))
        end = max(end, stop)
    ms = 1000.0 * calls
    kinds: dict[str, float] = {}
    for k in kernels:
        kind = kernel_kind(k["name"])
        kinds[kind] = kinds.get(kind, 0.0) + k["dur"] / ms
    return dict(span=(end - start) / ms, busy=busy / ms, nccl=kinds.get("nccl", 0.0),
                nccl_beside=_nccl_beside(kernels) / ms, idle_host=idle_host / ms, idle_other=idle_other / ms,
                kernels=len(kernels) // calls, kinds=kinds)


def _nccl_beside(kernels: list) -> float:
    """Microseconds of the NCCL kernels' time during which some other kernel ran (``kernels`` sorted by start)."""
    merged: list[list[float]] = []  # the other kernels' intervals, merged
    for k in kernels:
        if kernel_kind(k["name"]) != "nccl":
            a, b = k["ts"], k["ts"] + k["dur"]
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
    ends = [y for _, y in merged]  # sorted, as the merged intervals are disjoint and in order
    total = 0.0
    for k in kernels:
        if kernel_kind(k["name"]) == "nccl":
            a, b = k["ts"], k["ts"] + k["dur"]
            j = bisect.bisect_right(ends, a)  # the first merged interval ending after a
            while j < len(merged) and merged[j][0] < b:
                total += min(b, merged[j][1]) - max(a, merged[j][0])
                j += 1
    return total


# kernel kinds by (lower-case) name, first match wins: flash kernels' names may mention cutlass, and
# Inductor's fused elementwise kernels (triton_*) the attention ops they were fused with
KINDS = {"nccl": ("nccl",), "other": ("triton_",), "attention": ("sdpa", "flash", "fmha", "attention"),
         "gemm": ("gemm", "nvjet", "cutlass", "sm90_xmma")}


def kernel_kind(name: str) -> str:
    """A kernel's kind by its name: one of ``KINDS``, else "other"."""
    low = name.lower()
    return next((kind for kind, words in KINDS.items() if any(w in low for w in words)), "other")


def summary_line(s: dict) -> str:
    kinds = ", ".join(f"{k} {v:.1f}" for k, v in sorted(s.get("kinds", {}).items(), key=lambda kv: -kv[1]))
    return (f"span {s['span']:.1f}  busy {s['busy']:.1f} (nccl {s['nccl']:.1f}, {s.get('nccl_beside', 0.0):.1f} beside "
            f"other kernels)  idle: host {s['idle_host']:.1f}, "
            f"other {s['idle_other']:.1f}  ms a call; {s['kernels']} kernels; kernel time by kind: {kinds}")


def nccl_settings() -> str:
    """The NCCL_* settings of this process's environment, for benchmark headers."""
    found = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("NCCL_")]
    return ", ".join(found) if found else "no NCCL_* settings"
