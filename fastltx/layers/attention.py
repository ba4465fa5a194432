"""The one attention entry point and the attention module every component uses.

``attention`` runs PyTorch SDPA on (B, T, heads*head_dim) projections, with an optional additive
mask and an optional backend choice. ``Attention`` holds the projections of the official
checkpoints (``to_q``, ``to_k``, ``to_v``, ``q_norm``, ``k_norm``, ``to_out.0`` and, in LTX-2.3,
``to_gate_logits``) and implements the STG value pass-through.
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from fastltx.layers.linear import linear_rows
from fastltx.layers.norm import RMSNorm
from fastltx.layers.rope import Rope, apply_rope

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def check_backend(backend: str | None) -> str | None:
    if backend not in (None, "auto", *BACKENDS):
        raise ValueError(f"unknown attention backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    return None if backend == "auto" else backend


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
              backend: str | None = None) -> torch.Tensor:
    """Scaled dot-product attention on (B, T, heads*d) tensors; ``mask`` is an additive bias that
    broadcasts to (B, heads, Tq, Tk). ``backend`` None lets PyTorch choose."""
    b, tq, inner = q.shape
    d = inner // heads
    q, k, v = (t.view(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    return sdpa(q, k, v, mask, backend).transpose(1, 2).reshape(b, tq, inner)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
         backend: str | None = None) -> torch.Tensor:
    """``attention`` on (B, heads, T, d) tensors (any strides with a contiguous last dimension)."""
    ctx = sdpa_kernel(BACKENDS[backend]) if backend else contextlib.nullcontext()
    with ctx:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head attention with joint (all-heads) q/k RMSNorm, RoPE and optional per-head gating."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 eps: float = 1e-6, gated: bool = False):
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads, self.head_dim = heads, head_dim
        self.backend: str | None = None
        self.to_q = nn.Linear(query_dim, inner)
        self.to_k = nn.Linear(context_dim, inner)
        self.to_v = nn.Linear(context_dim, inner)
        self.q_norm = RMSNorm(inner, eps)
        self.k_norm = RMSNorm(inner, eps)
        self.to_gate_logits = nn.Linear(query_dim, heads) if gated else None
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def fuse_projections(self, self_attention: bool) -> None:
        """Replace to_q/to_k/to_v by ``to_qkv`` (self-attention) or to_k/to_v by ``to_kv``
        (cross-attention): one GEMM instead of three or two. A runtime transformation for
        inference: the state dict then holds the fused names."""
        names = ("to_q", "to_k", "to_v") if self_attention else ("to_k", "to_v")
        layers = [getattr(self, n) for n in names]
        w = layers[0].weight
        fused = nn.Linear(w.shape[1], sum(m.weight.shape[0] for m in layers), device="meta")
        fused.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]), requires_grad=False)
        fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in layers]), requires_grad=False)
        for n in names:
            delattr(self, n)
        setattr(self, "to_qkv" if self_attention else "to_kv", fused)

    def _project(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if hasattr(self, "to_qkv"):
            return self.to_qkv(x).chunk(3, dim=-1)
        return self.to_q(x), *self._project_kv(context)

    def _project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self, "to_kv"):
            return self.to_kv(context).chunk(2, dim=-1)
        return self.to_k(context), self.to_v(context)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised keys and values of a context, for reuse across calls (cross-attention without
        RoPE on the keys, e.g. the text cross-attention of a whole generation)."""
        k, v = self._project_kv(context)
        return self.k_norm(k), v

    def _qkv(self, x: torch.Tensor, context: torch.Tensor, rope: Rope | None, k_rope: Rope | None, kv):
        if kv is None:
            q, k, v = self._project(x, context)
            q, k = self.q_norm(q), self.k_norm(k)
        else:
            q, (k, v) = self.q_norm(self.to_q(x)), kv
        if rope is not None:
            q = apply_rope(q, rope)
            k = apply_rope(k, rope if k_rope is None else k_rope)
        return q, k, v

    def _gated_out(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.to_gate_logits is not None:
            gates = 2.0 * torch.sigmoid(self.to_gate_logits(x))  # (B, T, heads); zero logits = identity
            out = (out.unflatten(-1, (self.heads, self.head_dim)) * gates.unsqueeze(-1)).flatten(-2)
        return self.to_out(out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                rope: Rope | None = None, k_rope: Rope | None = None, keep: torch.Tensor | None = None,
                passthrough: bool = False, kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                shard=None, rider: torch.Tensor | None = None):
        """Attend from x to context (x itself when None), or to precomputed ``kv`` (see keys_values).

        STG: ``passthrough`` replaces the attention by the value projection for every sample (the
        q/k path is skipped); ``keep`` (B, 1, 1) blends per sample, 1 = attention, 0 = value.
        ``shard``: a ``SequenceShard`` when the keys (x itself for self-attention) are this rank's
        part of a sequence split across ranks (see sequence_parallel.py); None on one process.
        ``rider`` (self-attention over a shard whose exchange carries riders, not with
        ``passthrough``): a float32 tensor sent to every rank with the exchange; the result is then
        (output, every rank's rider stacked).
        """
        self_attention = context is None
        context = x if context is None else context
        riders = None
        if passthrough:  # (with fused projections q and k come along; STG touches one block)
            if rider is not None:
                raise ValueError("a rider needs the attention's exchange; passthrough has none")
            out = self.to_v(context) if hasattr(self, "to_v") else self._project(x, context)[2]
        else:
            if shard is not None and self_attention and kv is None and shard.sends_keys:
                out, v = self._sent_keys_attention(x, mask, rope, k_rope, shard, rider)
            else:
                q, k, v = self._qkv(x, context, rope, k_rope, kv)
                if shard is None:
                    out = attention(q, k, v, self.heads, mask, self.backend)
                else:
                    out = _sharded_attention(q, k, v, self.heads, mask, self.backend, shard, self_attention, rider)
            if rider is not None:
                out, riders = out
            if keep is not None:
                out = out * keep + v * (1 - keep)
        out = self._gated_out(x, out)
        return out if rider is None else (out, riders)

    def _sent_keys_attention(self, x: torch.Tensor, mask: torch.Tensor | None, rope: Rope | None,
                             k_rope: Rope | None, shard, rider):
        """(output, values) of self-attention over a shard whose exchange sends keys and values
        ("keys", "push"): they are projected and sent first, the queries projected while they travel
        (``sequence_parallel.send_keys``); the output as ``forward``'s, riders included."""
        from fastltx.layers.sequence_parallel import attend_sent, send_keys
        inner = self.heads * self.head_dim
        fused = getattr(self, "to_qkv", None)
        k, v = linear_rows(fused, x, inner, 3 * inner).chunk(2, dim=-1) if fused is not None else \
            (self.to_k(x), self.to_v(x))
        k = self.k_norm(k)
        flight = send_keys(k if rope is None else apply_rope(k, rope if k_rope is None else k_rope), v, shard, rider)
        # the queries' projection made to read the push's token (a zero), so that it runs beside the push
        q = self.q_norm(linear_rows(self.to_q if fused is None else fused, x, 0, inner, flight.token))
        q = q if rope is None else apply_rope(q, rope)
        return attend_sent(q, flight, self.heads, mask, self.backend, shard, rider), v

    def partial(self, x: torch.Tensor, context: torch.Tensor, shard, rope: Rope | None = None,
                k_rope: Rope | None = None) -> torch.Tensor:
        """Cross-attention from replicated ``x`` to a ``context`` sharded as ``shard`` says, this
        rank's part: ``sequence_parallel.local_partial``; ``finish`` completes it."""
        from fastltx.layers.sequence_parallel import local_partial
        q, k, v = self._qkv(x, context, rope, k_rope, None)
        return local_partial(q, k, v, self.heads, shard)

    def finish(self, x: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """The output of ``partial`` from every rank (stacked) combined, gated and projected."""
        from fastltx.layers.sequence_parallel import combine_partials
        return self._gated_out(x, combine_partials(parts, x.dtype))


def _sharded_attention(q, k, v, heads, mask, backend, shard, self_attention: bool, rider=None):
    from fastltx.layers.sequence_parallel import sharded_keys_attention, ulysses_attention
    if self_attention:  # (the exchanges that send keys: ``Attention._sent_keys_attention``)
        return ulysses_attention(q, k, v, heads, mask, backend, shard.group, rider)
    if mask is not None:
        raise ValueError("cross-attention to sharded keys takes no mask")
    if rider is not None:
        raise ValueError("only self-attention carries riders")
    return sharded_keys_attention(q, k, v, heads, shard)
