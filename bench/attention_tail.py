"""Probe: the last, partial wave of the attention kernel on a sequence-parallel rank.

On 4 GPUs each rank's video self-attention at stage 2 (768x1280, 15,360 tokens, "heads") runs 8 of
the 32 heads over the whole sequence: with 128-query tiles, 8 x 120 = 960 tiles on 132 SMs, 7.27
waves, so the last round keeps 36 SMs busy; on 1 GPU (3,840 tiles) the partial round is a 30th of
the time instead of an 8th. The nineteenth session's profile had attention +7.7 ms a step against
a quarter of 1 GPU (docs/benchmarks-multi-gpu-2.md). Finer work could fill that round: the keys
split in ``--splits`` parts, each part's attention with its log-sum-exp on a stream of its own (the
second kernel's tiles start on the SMs the first one's last round leaves), the parts combined.

For each (heads, tokens): SDPA as the blocks call it ("sdpa"), cuDNN and flash explicitly, the
split form on one stream (its overhead) and on several; "tail": the queries cut where whole waves
end, the rest on side streams against slices of the keys; then, for three shapes, that form piece
by piece, the rest's slices as one call's batch. Milliseconds a call (10 calls recorded in one CUDA
graph, medians), the time per head against the 32-head call's, the split forms' largest
difference from SDPA. Then the staircase: 8 heads over token counts around 15,360.

Twentieth session (H200s, torch 2.11, cuDNN 9.19; docs/benchmarks-multi-gpu-2.md): 8 heads cost
2.5-5% more a head than 32; the staircase is real (14,336 tokens 648 TFLOP/s, 14,848 557); keys
split on streams no faster (1.67-1.76 against 1.65 ms); the first 14,720 rows plus the rest batched
against thirds of the keys 1.557 against 1.654 ms at 8 x 15,360 alone, worse at 32 x 15,360,
32 x 3,840 and 16 x 7,680. Put in the library and measured in the 4-GPU pipeline: stage 2 877
against 873 ms without it (the combination and the two outputs' concatenation cost a 44 us kernel
in the compiled block); taken out.

    python bench/attention_tail.py [--splits 2,3]
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import time_cuda  # noqa: E402
from bench.small_m_gemm import graphed  # noqa: E402

D = 128


def lse_attention(q, k, v, backend: str):
    """(output (B, H, Tq, d), log-sum-exp (B, H, Tq) float32) of one part of the keys."""
    if backend == "cudnn":
        out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True)[:2]
    else:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
    return out, lse.reshape(q.shape[:3]).float()


@torch.compile(dynamic=False)
def combine(outs: list[torch.Tensor], lses: list[torch.Tensor]) -> torch.Tensor:
    top = torch.stack(lses).amax(0)
    weights = [torch.exp(lse - top).unsqueeze(-1) for lse in lses]
    total = sum(o.float() * w for o, w in zip(outs, weights))
    return (total / sum(weights)).to(outs[0].dtype)


def split_attention(q, k, v, parts: int, streams: list[torch.cuda.Stream] | None, backend: str):
    """Attention over ``parts`` slices of the keys, each on ``streams[i]`` (None: the current stream)."""
    n = k.shape[2]
    bounds = [n * i // parts for i in range(parts + 1)]
    main = torch.cuda.current_stream()
    outs, lses = [], []
    for i in range(parts):
        stream = main if streams is None or i == 0 else streams[i]
        if stream is not main:
            stream.wait_stream(main)
        with torch.cuda.stream(stream):
            o, lse = lse_attention(q, k[:, :, bounds[i]:bounds[i + 1]], v[:, :, bounds[i]:bounds[i + 1]], backend)
        outs.append(o)
        lses.append(lse)
    if streams is not None:
        for s in streams[1:parts]:
            main.wait_stream(s)
    return combine(outs, lses)


def tail_attention(q, k, v, streams: list[torch.cuda.Stream], sms: int, tile: int = 128):
    """The queries split where a whole number of waves ends (``tile``-row tiles on ``sms`` SMs):
    the first ones in one call, the rest against ``p`` slices of the keys, each slice's call on a
    stream of its own (one wave of short tiles), combined; None where that leaves p < 2."""
    b, h, tq, _ = q.shape
    tiles = b * h * -(-tq // tile)
    waves = tiles // sms
    rows = waves * sms // (b * h) * tile
    rest_tiles = b * h * -(-(tq - rows) // tile)
    p = min(len(streams), sms // max(rest_tiles, 1))
    if waves == 0 or rows >= tq or p < 2:
        return None
    main = torch.cuda.current_stream()
    for s in streams[:p]:  # (before the first call: the rest runs beside it, filling its last wave)
        s.wait_stream(main)
    first = F.scaled_dot_product_attention(q[:, :, :rows], k, v)
    n = k.shape[2]
    bounds = [n * i // p for i in range(p + 1)]
    outs, lses = [], []
    qr = q[:, :, rows:]
    for i in range(p):
        with torch.cuda.stream(streams[i]):
            o, lse = lse_attention(qr, k[:, :, bounds[i]:bounds[i + 1]], v[:, :, bounds[i]:bounds[i + 1]], "cudnn")
        outs.append(o)
        lses.append(lse)
    for s in streams[:p]:
        main.wait_stream(s)
    return torch.cat([first, combine(outs, lses)], dim=2)


def batched_rest(qr, k, v, p: int):
    """The remaining queries (B = 1) against ``p`` slices of the keys in one call, the slices as
    its batch (the keys a strided view, the queries copied ``p`` times)."""
    _, h, rest, d = qr.shape
    n = k.shape[2] // p
    ks, vs = (t[0].unflatten(1, (p, n)).transpose(0, 1) for t in (k, v))  # (p, h, n, d) views
    out, lse = lse_attention(qr.expand(p, h, rest, d).contiguous(), ks, vs, "cudnn")
    return combine(list(out.unsqueeze(1).unbind(0)), list(lse.unsqueeze(1).unbind(0)))


def breakdown(q, k, v, streams, sms: int, tile: int = 128) -> None:
    """8 x 15,360's tail form piece by piece (ms a call, graphed)."""
    b, h, tq, _ = q.shape
    waves = b * h * -(-tq // tile) // sms
    rows = waves * sms // (b * h) * tile
    rest_tiles = b * h * -(-(tq - rows) // tile)
    p = sms // rest_tiles
    qr = q[:, :, rows:]
    n = k.shape[2] // p
    parts = [(k[:, :, i * n:(i + 1) * n], v[:, :, i * n:(i + 1) * n]) for i in range(p)]
    pieces = {
        f"first {rows} rows": lambda: F.scaled_dot_product_attention(q[:, :, :rows], k, v),
        f"rest {tq - rows} rows, all keys": lambda: F.scaled_dot_product_attention(qr, k, v),
        f"rest, {p} slices in turn": lambda: [lse_attention(qr, kk, vv, "cudnn") for kk, vv in parts],
        f"rest, {p} slices batched + combine": lambda: batched_rest(qr, k, v, p),
        "cat of the two outputs": lambda: torch.cat([q[:, :, :rows], qr], dim=2),
    }
    pieces["sdpa, whole"] = lambda: F.scaled_dot_product_attention(q, k, v)
    for name, fn in pieces.items():
        print(f"    {name:<36} {timed_graph(fn):8.3f} ms", flush=True)
    print(f"    {'first, then batched rest':<36} "
          f"{timed_graph(lambda: (F.scaled_dot_product_attention(q[:, :, :rows], k, v), batched_rest(qr, k, v, p))):8.3f} ms")
    want = F.scaled_dot_product_attention(qr, k, v)
    print(f"    batched rest max |diff| {(batched_rest(qr, k, v, p) - want).abs().max().item():.2e}", flush=True)


def timed_graph(fn, calls: int = 10) -> float:
    """Milliseconds a call: ``calls`` calls of ``fn`` recorded in one CUDA graph, median of replays."""
    replay = graphed(fn, calls)
    return time_cuda(replay, warmup=2, reps=7) / calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splits", default="2,3")
    ap.add_argument("--cases", default="8x15360,32x15360,16x15360,8x3840,32x3840")
    args = ap.parse_args()
    splits = [int(s) for s in args.splits.split(",")]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_properties(0).multi_processor_count} SMs", flush=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    streams = [torch.cuda.Stream() for _ in range(max(*splits, 6))]
    torch._dynamo.config.recompile_limit = 64
    per_head = {}
    for case in args.cases.split(","):
        heads, tokens = (int(x) for x in case.split("x"))
        q, k, v = (torch.randn(1, heads, tokens, D, generator=g, device="cuda").to(torch.bfloat16) for _ in range(3))
        want = F.scaled_dot_product_attention(q, k, v)
        rows = {"sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
                "cudnn": lambda: lse_attention(q, k, v, "cudnn"), "flash": lambda: lse_attention(q, k, v, "flash")}
        for p in splits:
            rows[f"split{p} one stream"] = lambda p=p: split_attention(q, k, v, p, None, "cudnn")
            rows[f"split{p} streams"] = lambda p=p: split_attention(q, k, v, p, streams, "cudnn")
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        if tail_attention(q, k, v, streams, sms) is not None:
            rows["tail"] = lambda: tail_attention(q, k, v, streams, sms)
        if heads * tokens in (8 * 15360, 32 * 15360, 32 * 3840):
            breakdown(q, k, v, streams, sms)
        for name, fn in rows.items():
            ms = timed_graph(fn)
            if name == "sdpa":
                per_head.setdefault(tokens, {})[heads] = ms / heads
            err = ""
            if name.startswith("split") or name == "tail":
                err = f"  max |diff| {(fn() - want).abs().max().item():.2e}"
            print(f"{heads:>3} heads x {tokens:>6}: {name:<18} {ms:8.3f} ms{err}", flush=True)
    for tokens, by_heads in per_head.items():
        if 32 in by_heads:
            for heads, t in sorted(by_heads.items()):
                print(f"{tokens} tokens: {heads} heads, time per head / 32 heads' = {t / by_heads[32]:.3f}")
    print("staircase, 8 heads (sdpa):")
    for tokens in range(14336, 16897, 512):
        q, k, v = (torch.randn(1, 8, tokens, D, generator=g, device="cuda").to(torch.bfloat16) for _ in range(3))
        ms = timed_graph(lambda: F.scaled_dot_product_attention(q, k, v))
        print(f"  {tokens:>6} tokens ({tokens / 128:6.1f} tiles a head): {ms:7.3f} ms, "
              f"{4 * tokens * tokens * D * 8 / ms / 1e9:6.1f} TFLOP/s", flush=True)


if __name__ == "__main__":
    main()
