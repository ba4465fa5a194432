"""Attention over a sequence whose tokens are split across the ranks of a process group.

``SequenceShard`` says which tokens this rank holds: the sequence is padded to a multiple of the
group size and rank r holds tokens [r * chunk, (r + 1) * chunk); padding tokens sit at the end and
are never attended to (the caller masks them as keys). Two cases need communication:

* self-attention (queries and keys sharded), by one of two exchanges (``SequenceShard.exchange``):
  "heads" (Ulysses): one all-to-all turns (this rank's tokens, all heads) into (all tokens, this
  rank's heads), attention runs on this rank's heads over the whole sequence, a second all-to-all
  turns the result back; "keys": one all-gather gives every rank every token's keys and values, and
  this rank's queries attend to them with every head. A rank sends 4 (P - 1) / P token-rows of
  (heads x d) with "heads" and 2 (P - 1) with "keys": the same on 2 ranks, in one collective instead
  of two and with fewer layout copies; twice as much on 4. "auto" takes "keys" on 2 ranks only;
* cross-attention from replicated queries to sharded keys (audio attending to video): each rank
  attends to its own keys and returns the softmax normaliser; the small partial results (queries x
  heads) are all-gathered and combined exactly, so the keys are never gathered.
"""

from dataclasses import dataclass

import torch

from fastltx.layers.attention import sdpa
from fastltx.runtime.distributed import Group, all_gather, all_to_all


EXCHANGES = ("auto", "heads", "keys")


def resolve_exchange(exchange: str, ranks: int) -> str:
    """The self-attention exchange ("heads" or "keys") that ``exchange`` means over ``ranks`` ranks."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown sequence exchange {exchange!r}; choose one of {', '.join(EXCHANGES)}")
    if exchange == "auto":  # 4 x H200, distilled 768x1280, compiled and graphed, transformer steps over 1
        # GPU (docs/benchmarks.md, tenth session): 2 GPUs "keys" 1.78x, "heads" 1.77x; 4 GPUs "heads"
        # 3.23x, "keys" 3.15x (1024x1536: 3.43x / 3.37x)
        return "keys" if ranks == 2 else "heads"
    return exchange


@dataclass(frozen=True)
class SequenceShard:
    group: Group
    tokens: int  # real tokens of the whole sequence
    chunk: int  # tokens per rank, padding included
    exchange: str = "heads"  # how self-attention exchanges its tokens: "heads" (Ulysses) or "keys"

    @classmethod
    def plan(cls, tokens: int, group: Group, exchange: str = "auto") -> "SequenceShard":
        return cls(group, tokens, -(-tokens // group.size), resolve_exchange(exchange, group.size))

    @property
    def padded(self) -> int:
        return self.chunk * self.group.size

    @property
    def start(self) -> int:
        return self.group.rank * self.chunk

    @property
    def local_tokens(self) -> int:
        """Real (not padding) tokens on this rank."""
        return max(0, min(self.chunk, self.tokens - self.start))

    def take(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """This rank's part of a full-length tensor along ``dim`` (padded by repeating the last token)."""
        if self.padded > x.shape[dim]:
            last = x.narrow(dim, x.shape[dim] - 1, 1)
            shape = list(x.shape)
            shape[dim] = self.padded - x.shape[dim]
            x = torch.cat([x, last.expand(shape)], dim=dim)
        return x.narrow(dim, self.start, self.chunk)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, chunk, ...) parts of every rank -> the full (B, tokens, ...) tensor on every rank."""
        parts = all_gather(x.unsqueeze(0), self.group)  # (P, B, chunk, ...)
        return parts.transpose(0, 1).flatten(1, 2)[:, :self.tokens]


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None,
                      backend: str | None, group: Group) -> torch.Tensor:
    """Self-attention of (B, chunk, heads*d) shards over the whole (padded) sequence; ``mask``
    broadcasts to (B, heads, padded, padded).

    One all-to-all sends each rank its heads of q, k and v for this rank's tokens, a second one
    sends the attention's output back. The buffers are laid out sequence-major so that the received
    heads feed SDPA as strided views, without copies. (Pipelining the heads in groups, each group's
    all-to-all overlapping the previous group's attention, measured no gain at full size: 4 x H200,
    24,576 tokens, 4 groups against 1: 1132 vs 1137 ms on 2 GPUs, 609 vs 601 ms on 4; and it adds
    collectives, whose fixed cost dominates the small steps.)
    """
    p = group.size
    if heads % p:
        raise ValueError(f"sequence parallelism over {p} ranks needs a head count divisible by {p}, got {heads}")
    b, chunk, inner = q.shape
    d, local = inner // heads, heads // p  # a head's index is (rank, head on that rank)
    buf = q.new_empty(p, chunk, 3, b, local * d)  # per destination rank: its heads of q, k, v
    for j, t in enumerate((q, k, v)):
        buf[:, :, j] = t.view(b, chunk, p, local * d).permute(2, 1, 0, 3)
    qkv = all_to_all(buf, group).view(p * chunk, 3, b, local, d)  # the whole sequence, this rank's heads
    out = sdpa(*(qkv[:, j].permute(1, 2, 0, 3) for j in range(3)), mask, backend)  # (B, local, padded, d)
    back = all_to_all(out.view(b, local, p, chunk, d).permute(2, 3, 0, 1, 4), group)
    return back.view(p, chunk, b, local * d).permute(2, 1, 0, 3).reshape(b, chunk, inner)


def gathered_keys_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                            mask: torch.Tensor | None, backend: str | None, group: Group) -> torch.Tensor:
    """Self-attention of (B, chunk, heads*d) shards: every rank's keys and values all-gathered
    (sequence-major, so that SDPA reads them in place), this rank's queries attending to them with
    every head; ``mask`` broadcasts to (B, heads, padded, padded) and its rows of this rank's
    queries are used."""
    b, chunk, inner = q.shape
    d, p = inner // heads, group.size
    send = q.new_empty(chunk, 2, b, inner)
    send[:, 0], send[:, 1] = k.transpose(0, 1), v.transpose(0, 1)
    kv = all_gather(send, group).view(p * chunk, 2, b, heads, d)  # the whole (padded) sequence
    if mask is not None and mask.shape[-2] > 1:
        mask = mask.narrow(-2, group.rank * chunk, chunk)
    out = sdpa(q.view(b, chunk, heads, d).transpose(1, 2), *(kv[:, j].permute(1, 2, 0, 3) for j in range(2)),
               mask, backend)  # (B, heads, chunk, d)
    return out.transpose(1, 2).reshape(b, chunk, inner)


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention on (B, heads, T, d) and its log-sum-exp normaliser (B, heads, Tq), float32.

    The fused kernels that return the normaliser are used where they exist (CUDA bf16/fp16, CPU)
    unless ``fused`` is False; elsewhere it is computed directly in float32."""
    if k.shape[2] == 0:
        return q.new_zeros(q.shape, dtype=torch.float32), q.new_full(q.shape[:3], float("-inf"), dtype=torch.float32)
    if fused and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
    elif fused and q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    else:
        scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        lse = torch.logsumexp(scores, dim=-1)
        out = torch.exp(scores - lse.unsqueeze(-1)) @ v.float()
    return out.float(), lse.float()


def sharded_keys_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                           shard: SequenceShard) -> torch.Tensor:
    """Attention of replicated queries (B, Tq, heads*d) to keys/values sharded as ``shard`` says
    (B, chunk, heads*d each): partial attention per rank, combined by log-sum-exp in float32."""
    b, tq, inner = q.shape
    d = inner // heads
    n = shard.local_tokens
    qh = q.view(b, tq, heads, d).transpose(1, 2)
    kh, vh = (t[:, :n].reshape(b, n, heads, d).transpose(1, 2) for t in (k, v))
    partial, lse = partial_attention(qh, kh, vh)
    parts = all_gather(torch.cat([partial, lse.unsqueeze(-1)], dim=-1).unsqueeze(0), shard.group)
    outs, lses = parts[..., :d], parts[..., d:]  # (P, B, heads, Tq, d), (P, B, heads, Tq, 1)
    weights = torch.exp(lses - lses.max(dim=0).values)
    out = (outs * weights).sum(0) / weights.sum(0)
    return out.transpose(1, 2).reshape(b, tq, inner).to(q.dtype)
