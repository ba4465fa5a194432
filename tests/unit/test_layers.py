"""Shared layers against known values and independent formulations."""

import math

import torch
import torch.nn.functional as F

from fastltx.layers.attention import Attention, attention
from fastltx.layers.embeddings import timestep_sinusoid
from fastltx.layers.norm import layer_norm, pixel_norm, rms_norm
from fastltx.layers.rope import Rope, RopeLayout, apply_rope, frequency_grid, rope_tables


def test_frequency_grid_full_size():
    """4096 wide, 3 axes: 682 frequencies from pi/2 to pi/2 * 10000; the float64 grid differs from the
    float32 one by about 4.9e-3 at the top frequency (reference notes, detail 6)."""
    g64, g32 = frequency_grid(10000.0, 3, 4096, True), frequency_grid(10000.0, 3, 4096, False)
    assert g64.shape == (682,) and g64.dtype == torch.float32
    assert math.isclose(g64[0].item(), math.pi / 2, rel_tol=1e-7)
    assert math.isclose(g64[-1].item(), math.pi / 2 * 10000, rel_tol=1e-7)
    diff = (g64 - g32).abs().max().item()
    assert 3e-3 < diff < 7e-3, diff


def test_split_tables_pad_front_with_identity():
    pos = torch.rand(1, 3, 5, 2)
    rope = rope_tables(pos, 4096, 32, (20, 2048, 2048), 10000.0, RopeLayout.SPLIT, True, torch.float32)
    assert rope.cos.shape == (1, 5, 32, 64)
    flat_cos, flat_sin = rope.cos.flatten(2), rope.sin.flatten(2)
    assert (flat_cos[..., :2] == 1).all() and (flat_sin[..., :2] == 0).all()  # 2048 - 3*682 = 2 pads
    assert (flat_sin[..., 2:] != 0).any()


def test_interleaved_tables_pad_and_repeat():
    pos = torch.rand(2, 3, 4, 2)
    rope = rope_tables(pos, 32, 2, (20, 2048, 2048), 10000.0, RopeLayout.INTERLEAVED, False, torch.float32)
    assert rope.cos.shape == (2, 4, 32)
    pad = 32 % 6
    assert (rope.cos[..., :pad] == 1).all()
    assert torch.equal(rope.cos[..., pad::2], rope.cos[..., pad + 1::2])


def test_rope_is_a_rotation_by_the_angles():
    """Both layouts rotate each (a, b) pair by its angle: compare with complex multiplication."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    angles = torch.randn(2, 5, 8, dtype=torch.float64)
    # interleaved: pairs (2i, 2i+1)
    rope = Rope(angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1), RopeLayout.INTERLEAVED)
    z = torch.view_as_complex(x.view(2, 5, 8, 2).contiguous()) * torch.polar(torch.ones_like(angles), angles)
    assert torch.allclose(apply_rope(x, rope), torch.view_as_real(z).flatten(-2))
    # split, 2 heads of 8: element i of a head pairs with element i + 4
    a = angles.view(2, 5, 2, 4)
    rope = Rope(a.cos(), a.sin(), RopeLayout.SPLIT)
    h = x.view(2, 5, 2, 2, 4)
    z = torch.complex(h[..., 0, :], h[..., 1, :]) * torch.polar(torch.ones_like(a), a)
    assert torch.allclose(apply_rope(x, rope), torch.stack([z.real, z.imag], dim=-2).flatten(2))


def test_timestep_sinusoid_known_values():
    e = timestep_sinusoid(torch.tensor([0.0, 1000.0]))
    assert e.shape == (2, 256)
    assert torch.equal(e[0, :128], torch.ones(128)) and torch.equal(e[0, 128:], torch.zeros(128))
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float64) / 128)
    assert torch.allclose(e[1].double(), torch.cat([torch.cos(1000 * freqs), torch.sin(1000 * freqs)]), atol=2e-4)


def test_norms():
    x = torch.randn(3, 7, 10, dtype=torch.float64)
    w = torch.randn(10, dtype=torch.float64)
    want = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w
    assert torch.allclose(rms_norm(x, w), want)
    assert torch.allclose(layer_norm(x), (x - x.mean(-1, keepdim=True)) /
                          torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-6))
    assert torch.allclose(pixel_norm(x, dim=1), x / torch.sqrt((x * x).mean(1, keepdim=True) + 1e-8))


def test_attention_matches_explicit_softmax_with_additive_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 5, 12, dtype=torch.float64) for _ in range(3))
    mask = torch.randn(2, 1, 5, 5, dtype=torch.float64)
    out = attention(q, k, v, heads=3, mask=mask, backend="math")
    qh, kh, vh = (t.view(2, 5, 3, 4).transpose(1, 2) for t in (q, k, v))
    p = torch.softmax(qh @ kh.transpose(-1, -2) / 2.0 + mask, dim=-1)
    assert torch.allclose(out, (p @ vh).transpose(1, 2).reshape(2, 5, 12))


def test_stg_value_passthrough():
    torch.manual_seed(0)
    attn = Attention(8, 2, 4).double()
    for p in attn.parameters():
        torch.nn.init.normal_(p)
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    value_only = attn.to_out(attn.to_v(x))
    assert torch.allclose(attn(x, passthrough=True), value_only)
    keep = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64).view(3, 1, 1)
    mixed, full = attn(x, keep=keep), attn(x)
    assert torch.allclose(mixed[1], value_only[1]) and torch.allclose(mixed[0], full[0])
    assert not torch.allclose(full[1], value_only[1])


def test_gated_attention_zero_logits_is_identity():
    attn = Attention(8, 2, 4, gated=True).double()
    plain = Attention(8, 2, 4).double()
    for p in plain.parameters():
        torch.nn.init.normal_(p)
    sd = plain.state_dict()
    sd.update({"to_gate_logits.weight": torch.zeros(2, 8, dtype=torch.float64),
               "to_gate_logits.bias": torch.zeros(2, dtype=torch.float64)})
    attn.load_state_dict(sd)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    assert torch.allclose(attn(x), plain(x))


def test_backend_choice_is_validated():
    import pytest
    from fastltx.layers.attention import check_backend
    assert check_backend("auto") is None and check_backend("cudnn") == "cudnn"
    with pytest.raises(ValueError, match="unknown attention backend"):
        check_backend("xformers")


def test_feed_forward_is_gelu_tanh_mlp():
    from fastltx.layers.mlp import FeedForward
    ff = FeedForward(4).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    want = ff.net[2](F.gelu(ff.net[0].proj(x), approximate="tanh"))
    assert torch.allclose(ff(x), want) and set(ff.state_dict()) == {
        "net.0.proj.weight", "net.0.proj.bias", "net.2.weight", "net.2.bias"}
