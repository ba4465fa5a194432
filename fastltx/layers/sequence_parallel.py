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
  of two and with fewer layout copies; twice as much on 4. "overlap": "keys" with the all-gather
  running (on a side stream) while this rank's queries attend to its own keys, the other ranks'
  keys attended to after it and the partial results combined by log-sum-exp (below);
  "auto" takes "keys" on 2 ranks only;
* cross-attention from replicated queries to sharded keys (audio attending to video): each rank
  attends to its own keys and returns the softmax normaliser; the small partial results (queries x
  heads) are all-gathered and combined exactly, so the keys are never gathered.
"""

from dataclasses import dataclass

import torch

from fastltx.layers.attention import sdpa
from fastltx.runtime.distributed import Group, all_gather, all_gather_during, all_to_all


EXCHANGES = ("auto", "heads", "keys", "overlap")


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


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, fused: bool = True,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention on (B, heads, T, d), in ``dtype``, and its log-sum-exp normaliser (B,
    heads, Tq), float32.

    The fused kernels that return the normaliser are used where they exist (CUDA bf16/fp16, CPU)
    unless ``fused`` is False; elsewhere it is computed directly in float32."""
    if k.shape[2] == 0:
        return q.new_zeros(q.shape, dtype=dtype), q.new_full(q.shape[:3], float("-inf"), dtype=torch.float32)
    if fused and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[:2]
    elif fused and q.device.type == "cpu":
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    else:
        scores = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        lse = torch.logsumexp(scores, dim=-1)
        out = torch.exp(scores - lse.unsqueeze(-1)) @ v.float()
    return out.to(dtype), lse.float()


def overlapped_keys_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                              mask: torch.Tensor | None, backend: str | None, group: Group) -> torch.Tensor:
    """``gathered_keys_attention`` with the all-gather hidden behind attention: while every rank's
    keys and values travel, this rank's queries attend to its own (partial softmax with its
    normaliser); then to the other ranks' (one or two more partials), and the partials are combined
    exactly by log-sum-exp in float32. Without a mask only (padding or attention strengths take
    ``gathered_keys_attention``, as does a ``backend`` other than flash, the kernel of the partials)."""
    if mask is not None or backend not in (None, "flash"):
        return gathered_keys_attention(q, k, v, heads, mask, backend, group)
    b, chunk, inner = q.shape
    send = q.new_empty(chunk, 2, b, inner)
    send[:, 0], send[:, 1] = k.transpose(0, 1), v.transpose(0, 1)
    parts = torch.ops.fastltx.keys_attention_parts(q, send, heads, group.group.group_name, group.rank, group.size)
    outs, lses = parts[:len(parts) // 2], parts[len(parts) // 2:]  # (B, chunk, heads, d), (B, heads, chunk)
    lses = [lse.transpose(1, 2).unsqueeze(-1) for lse in lses]
    top = lses[0]
    for lse in lses[1:]:
        top = torch.maximum(top, lse)
    weights = [torch.exp(lse - top) for lse in lses]
    out = sum(o.float() * w for o, w in zip(outs, weights)) / sum(weights)
    return out.to(q.dtype).reshape(b, chunk, inner)


def _other_ranges(rank: int, size: int) -> list[tuple[int, int]]:
    """The other ranks' slots of a gather, as (first, end) runs of consecutive ranks."""
    return [(a, e) for a, e in ((0, rank), (rank + 1, size)) if e > a]


@torch.library.custom_op("fastltx::keys_attention_parts", mutates_args=())
def _keys_attention_parts(q: torch.Tensor, send: torch.Tensor, heads: int, group_name: str, rank: int,
                          size: int) -> list[torch.Tensor]:
    """The partial attentions of ``overlapped_keys_attention``: q (B, chunk, heads*d), send (chunk, 2,
    B, heads*d) this rank's keys and values; [attention (B, chunk, heads, d) of the own keys, then
    of each run of other ranks' keys, ..., their normalisers (B, heads, chunk)], the own partial
    computed while the others' keys are gathered."""
    chunk, _, b, inner = send.shape
    d = inner // heads
    qh = q.unflatten(-1, (heads, d)).transpose(1, 2)

    def attend(kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # kv (T, 2, B, heads*d)
        k, v = (kv[:, j].unflatten(-1, (heads, d)).permute(1, 2, 0, 3) for j in range(2))
        out, lse = partial_attention(qh, k, v, dtype=q.dtype)
        return out.transpose(1, 2).contiguous(), lse.contiguous()

    gathered, own = all_gather_during(send, group_name, size, lambda: attend(send))
    parts = [own] + [attend(gathered[a * chunk:e * chunk]) for a, e in _other_ranges(rank, size)]
    return [o for o, _ in parts] + [lse for _, lse in parts]


@_keys_attention_parts.register_fake
def _(q, send, heads, group_name, rank, size):
    chunk, _, b, inner = send.shape
    n = 1 + len(_other_ranges(rank, size))
    return ([q.new_empty(b, chunk, heads, inner // heads) for _ in range(n)]
            + [q.new_empty(b, heads, chunk, dtype=torch.float32) for _ in range(n)])


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
