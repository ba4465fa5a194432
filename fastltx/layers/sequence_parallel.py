"""Attention over a sequence whose tokens are split across the ranks of a process group.

``SequenceShard`` says which tokens this rank holds: the sequence is padded to a multiple of the
group size and rank r holds tokens [r * chunk, (r + 1) * chunk); padding tokens sit at the end and
are never attended to (the caller masks them as keys). Two cases need communication:

* self-attention (queries and keys sharded), by one of three exchanges (``SequenceShard.exchange``):
  "heads" (Ulysses): one all-to-all turns (this rank's tokens, all heads) into (all tokens, this
  rank's heads), attention runs on this rank's heads over the whole sequence, a second all-to-all
  turns the result back (where the ranks do not divide the heads, phantom heads of zeros pad them
  to a multiple of the ranks, each rank attending with as many, and the phantoms' output is
  dropped: 32 heads over 3 ranks, 11 a rank, the last rank's last one a phantom; the phantoms are
  the highest heads, on the last rank or two); "keys": one all-gather gives every rank every
  token's keys and values, and this rank's queries attend to them with every head; "push": the same
  keys and values pushed by the copy engines into the peers' memory (fastltx/runtime/push.py, CUDA)
  while the rank projects its queries (with "keys" the gather runs on the caller's stream: the
  projection waits). A rank sends
  4 (P - 1) / P token-rows of (heads x d) with "heads" and 2 (P - 1) with "keys" or "push": the
  same on 2 ranks, in one collective instead of two and with fewer layout copies; twice as much on
  4. "auto" takes "push" on 2 ranks where it can run (``push_available``, then ``push_usable``:
  symmetric memory made on every rank), else "keys" on 2 ranks, "heads" on more (the transformer
  takes "keys" where the ranks do not divide its heads, as measured on 3:
  models/transformer/sharding.py);
* cross-attention from replicated queries to sharded keys (audio attending to video): each rank
  attends to its own keys and returns the softmax normaliser; the small partial results (queries x
  heads) are all-gathered and combined exactly, so the keys are never gathered.

The self-attention exchanges can carry a "rider": a small tensor every rank sends to every other
(the partial results above, which the blocks can hand to the next block's self-attention instead
of gathering them in a collective of their own: one collective a block fewer; the transformer's
``sequence_riders``, by default on small shards only: models/transformer/sharding.py). With "heads"
it rides in the output all-to-all, whose two sides are layout copies anyway; with "keys" or "push"
on 2 ranks, in the keys' exchange, rank 0 placing it before its keys and rank 1 after, so that the
gathered keys stay one strided run for the attention. ``carries_riders`` says whether an exchange can.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch

from fastltx.layers.attention import sdpa
from fastltx.runtime.distributed import Group, all_gather, all_to_all
from fastltx.runtime.push import gathered, push_available, push_start, push_usable

EXCHANGES = ("auto", "heads", "keys", "push")
KEY_EXCHANGES = ("keys", "push")  # the exchanges that send keys and values (``send_keys``)


def check_exchange(exchange: str) -> str:
    """``exchange`` if it is one of ``EXCHANGES``; a ValueError naming them otherwise."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown sequence exchange {exchange!r}; choose one of {', '.join(EXCHANGES)}")
    return exchange


def resolve_exchange(exchange: str, ranks: int, device: torch.device | str | None = None) -> str:
    """The self-attention exchange ("heads", "keys" or "push") that ``exchange`` means over ``ranks``
    ranks whose tensors live on ``device``'s kind (None: not CUDA)."""
    check_exchange(exchange)
    if exchange == "auto":  # 4 x H200, distilled 768x1280, compiled and graphed, transformer steps over 1
        # GPU (docs/benchmarks.md, tenth session): 2 GPUs "keys" 1.78x, "heads" 1.77x; 4 GPUs "heads"
        # 3.23x, "keys" 3.15x (1024x1536: 3.43x / 3.37x). 2 x H200, seventeenth session: "push" 1.82x,
        # "keys" 1.78x (docs/benchmarks-multi-gpu-2.md)
        if ranks != 2:
            return "heads"
        cuda = device is not None and torch.device(device).type == "cuda"
        return "push" if cuda and push_available() else "keys"
    return exchange


@dataclass(frozen=True)
class SequenceShard:
    group: Group
    tokens: int  # real tokens of the whole sequence
    chunk: int  # tokens per rank, padding included
    exchange: str = "heads"  # how self-attention exchanges its tokens: "heads" (Ulysses), "keys" or "push"
    riders: bool = False  # let the self-attention exchanges carry riders where they can (see above)

    @classmethod
    def plan(cls, tokens: int, group: Group, exchange: str = "auto", riders: bool = False,
             device: torch.device | str | None = None) -> "SequenceShard":
        """``device``: where the tensors live (for "auto": see ``resolve_exchange``). "auto" that
        resolves to "push" asks ``push_usable`` (a collective at a group's first plan) and takes
        "keys" where symmetric memory cannot be made."""
        resolved = resolve_exchange(exchange, group.size, device)
        if exchange == "auto" and resolved == "push" and not push_usable(group, device):
            resolved = "keys"
        return cls(group, tokens, -(-tokens // group.size), resolved, riders)

    @property
    def carry(self) -> bool:
        """Whether self-attention over this shard carries riders (``riders`` and ``carries_riders``)."""
        return self.riders and carries_riders(self.exchange, self.group.size)

    @property
    def sends_keys(self) -> bool:
        """Whether self-attention over this shard sends keys and values (``send_keys``)."""
        return self.exchange in KEY_EXCHANGES

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


def carries_riders(exchange: str, ranks: int) -> bool:
    """Whether self-attention through ``exchange`` over ``ranks`` ranks can carry a rider."""
    return exchange == "heads" or (exchange in KEY_EXCHANGES and ranks == 2)


def _rider_elements(rider: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float32 rider as a flat tensor of ``dtype`` (its bits reinterpreted; widened if ``dtype`` is wider)."""
    flat = rider.float().reshape(-1)
    return flat.view(dtype) if dtype.itemsize <= 4 else flat.to(dtype)


def _rider_back(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(P, n) elements from ``_rider_elements`` -> (P, *like.shape) float32."""
    p = flat.shape[0]
    if flat.dtype.itemsize <= 4:
        count = like.numel() * 4 // flat.dtype.itemsize
        return flat[:, :count].contiguous().view(torch.float32).view(p, *like.shape)
    return flat[:, :like.numel()].float().view(p, *like.shape)


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None,
                      backend: str | None, group: Group, rider: torch.Tensor | None = None):
    """Self-attention of (B, chunk, heads*d) shards over the whole (padded) sequence; ``mask``
    broadcasts to (B, heads, padded, padded).

    One all-to-all sends each rank its heads of q, k and v for this rank's tokens, a second one
    sends the attention's output back. The buffers are laid out sequence-major so that the received
    heads feed SDPA as strided views, without copies. (Pipelining the heads in groups, each group's
    all-to-all overlapping the previous group's attention, measured no gain at full size: 4 x H200,
    24,576 tokens, 4 groups against 1: 1132 vs 1137 ms on 2 GPUs, 609 vs 601 ms on 4; and it adds
    collectives, whose fixed cost dominates the small steps.) ``rider``: a float32 tensor sent to
    every rank with the output; the result is then (output, every rank's rider stacked: (P, ...)).
    """
    p = group.size
    b, chunk, inner = q.shape
    d, local = inner // heads, -(-heads // p)  # a head's index is (rank, head on that rank)
    width = p * local * d  # where the ranks do not divide the heads, the highest heads (p * local - heads) are phantoms
    buf = q.new_empty(p, chunk, 3, b, local * d)  # per destination rank: its heads of q, k, v
    for j, t in enumerate((q, k, v)):
        t = torch.nn.functional.pad(t, (0, width - inner)) if width > inner else t  # phantoms: zeros
        buf[:, :, j] = t.view(b, chunk, p, local * d).permute(2, 1, 0, 3)
    qkv = all_to_all(buf, group).view(p * chunk, 3, b, local, d)  # the whole sequence, this rank's heads
    out = sdpa(*(qkv[:, j].permute(1, 2, 0, 3) for j in range(3)), mask, backend)  # (B, local, padded, d)
    parts = out.view(b, local, p, chunk, d).permute(2, 3, 0, 1, 4)  # per destination rank: its tokens

    def tokens_back(received: torch.Tensor) -> torch.Tensor:  # (P, chunk, B, local*d) -> (B, chunk, inner)
        whole = received.permute(2, 1, 0, 3).reshape(b, chunk, width)
        return whole if width == inner else whole[..., :inner].contiguous()

    if rider is None:
        return tokens_back(all_to_all(parts, group).view(p, chunk, b, local * d))
    extra = _rider_elements(rider, out.dtype)
    n = chunk * b * local * d
    send = out.new_empty(p, n + extra.numel())
    send[:, :n].view(p, chunk, b, local, d).copy_(parts)
    send[:, n:] = extra
    back = all_to_all(send, group)
    own = tokens_back(back[:, :n].view(p, chunk, b, local * d))
    return own, _rider_back(back[:, n:], rider)


class KeysInFlight(NamedTuple):
    """Keys and values on their way to every rank (``send_keys``); ``attend_sent`` receives them."""

    shape: torch.Size  # what this rank sends: (rows + chunk, 2, B, heads*d) (rank 0) or (chunk + rows, ...)
    rows: int  # rider rows a rank sends (whole token rows of keys and values)
    token: torch.Tensor | None  # "push": push_start's token (what the queries' projection reads: ``linear_rows``)
    gathered: torch.Tensor | None  # "keys": every rank's part, gathered


def send_keys(k: torch.Tensor, v: torch.Tensor, shard: SequenceShard,
              rider: torch.Tensor | None = None) -> KeysInFlight:
    """Send this rank's (B, chunk, heads*d) keys and values to every rank of the shard's group, laid
    out sequence-major (so that SDPA reads the gathered ones in place): "keys" gathers them now (NCCL
    or gloo), "push" starts pushing them into the peers' buffers and returns at once
    (fastltx/runtime/push.py), so that the caller's next work (the queries' projection) overlaps
    the exchange. ``rider`` (2 ranks only): as in ``ulysses_attention``, sent as whole rows, before
    rank 0's keys and after rank 1's, so that the gathered keys stay one strided run."""
    b, chunk, inner = k.shape
    group = shard.group
    rows = 0
    if rider is not None:
        if group.size != 2:
            raise ValueError(f"the keys exchange carries a rider on 2 ranks only, not {group.size}")
        extra = _rider_elements(rider, k.dtype)
        rows = -(-extra.numel() // (2 * b * inner))
        send = k.new_empty(chunk + rows, 2, b, inner)
        first = group.rank == 0  # rank 0: rider, keys; rank 1: keys, rider
        (send[:rows] if first else send[chunk:]).view(-1)[:extra.numel()] = extra
        kv_rows = send[rows:] if first else send[:chunk]
    else:
        send = kv_rows = k.new_empty(chunk, 2, b, inner)
    kv_rows[:, 0], kv_rows[:, 1] = k.transpose(0, 1), v.transpose(0, 1)
    if shard.exchange == "push":
        return KeysInFlight(send.shape, rows, push_start(send, group), None)
    return KeysInFlight(send.shape, rows, None, all_gather(send, group))


def attend_sent(q: torch.Tensor, flight: KeysInFlight, heads: int, mask: torch.Tensor | None,
                backend: str | None, shard: SequenceShard, rider: torch.Tensor | None = None):
    """This rank's (B, chunk, heads*d) queries attending with every head to the keys and values
    ``send_keys`` sent (the whole padded sequence); ``mask`` broadcasts to (B, heads, padded,
    padded) and its rows of this rank's queries are used. With ``rider`` (the one given to
    ``send_keys``): (output, every rank's rider stacked), as ``ulysses_attention`` returns.
    "push": inside the op ``attend_pushed``, which alone reads the group's buffer."""
    group = shard.group
    if mask is not None and mask.shape[-2] > 1:
        mask = mask.narrow(-2, group.rank * q.shape[1], q.shape[1])
    if flight.token is None:
        out, riders = _attend_gathered(q, flight.gathered, flight.rows, heads, mask, backend, group.size)
    else:
        out, riders = torch.ops.fastltx.attend_pushed(q, flight.token, mask, list(flight.shape), group.group.group_name,
                                                      group.size, flight.rows, heads, backend)
    return out if rider is None else (out, _rider_back(riders, rider))


def _attend_gathered(q: torch.Tensor, gathered: torch.Tensor, rows: int, heads: int, mask: torch.Tensor | None,
                     backend: str | None, ranks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(output (B, chunk, heads*d) contiguous, the 2 ranks' rider rows stacked: (2, n), n = 0 without
    riders) of ``attend_sent``, from the gathered keys' buffer."""
    b, chunk, inner = q.shape
    d = inner // heads
    # rank 0's rider, the whole (padded) sequence, rank 1's rider
    kv = gathered[rows:rows + ranks * chunk].view(ranks * chunk, 2, b, heads, d)
    out = sdpa(q.reshape(b, chunk, heads, d).transpose(1, 2), *(kv[:, j].permute(1, 2, 0, 3) for j in range(2)),
               mask, backend)  # (B, heads, chunk, d)
    riders = torch.stack([gathered[:rows].reshape(-1), gathered[rows + ranks * chunk:].reshape(-1)])
    return out.transpose(1, 2).reshape(b, chunk, inner).contiguous(), riders


@torch.library.custom_op("fastltx::attend_pushed", mutates_args=())
def _attend_pushed(q: torch.Tensor, token: torch.Tensor, mask: torch.Tensor | None, shape: list[int],
                   group_name: str, ranks: int, rows: int, heads: int,
                   backend: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    # the gathered view is read here alone: compiled code could place its own tensors in an op's result
    return _attend_gathered(q, gathered(token, shape, group_name, ranks), rows, heads, mask, backend, ranks)


@_attend_pushed.register_fake
def _(q, token, mask, shape, group_name, ranks, rows, heads, backend):
    b, chunk, inner = q.shape
    return q.new_empty(b, chunk, inner), token.new_empty(2, rows * 2 * b * inner)


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


def local_partial(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                  shard: SequenceShard) -> torch.Tensor:
    """This rank's part of the attention of replicated queries (B, Tq, heads*d) to keys/values
    sharded as ``shard`` says (B, chunk, heads*d each): (B, heads, Tq, d + 1) float32, the partial
    output and its log-sum-exp normaliser, to be combined by ``combine_partials``."""
    b, tq, inner = q.shape
    d = inner // heads
    n = shard.local_tokens
    qh = q.view(b, tq, heads, d).transpose(1, 2)
    kh, vh = (t[:, :n].reshape(b, n, heads, d).transpose(1, 2) for t in (k, v))
    partial, lse = partial_attention(qh, kh, vh)
    return torch.cat([partial, lse.unsqueeze(-1)], dim=-1)


def combine_partials(parts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Every rank's ``local_partial`` (P, B, heads, Tq, d + 1) -> the attention output (B, Tq, heads*d),
    combined exactly by log-sum-exp in float32."""
    _, b, heads, tq, width = parts.shape
    d = width - 1
    outs, lses = parts[..., :d], parts[..., d:]  # (P, B, heads, Tq, d), (P, B, heads, Tq, 1)
    weights = torch.exp(lses - lses.max(dim=0).values)
    out = (outs * weights).sum(0) / weights.sum(0)
    return out.transpose(1, 2).reshape(b, tq, heads * d).to(dtype)


def sharded_keys_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                           shard: SequenceShard) -> torch.Tensor:
    """Attention of replicated queries (B, Tq, heads*d) to keys/values sharded as ``shard`` says
    (B, chunk, heads*d each): partial attention per rank, all-gathered, combined."""
    return combine_partials(gather_partials(local_partial(q, k, v, heads, shard), shard), q.dtype)


def gather_partials(partial: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
    """Every rank's ``local_partial``, stacked (P, ...): the collective of its own that a rider saves."""
    return all_gather(partial.unsqueeze(0), shard.group)
