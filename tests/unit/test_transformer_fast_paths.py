"""The transformer's speed paths compute what the plain path computes.

Fused projections and cached text keys/values are exact rearrangements (float32 bound 1e-6);
torch.compile reorders float arithmetic (bound 1e-5, and one graph shared by every block); fp8
linears quantise (e4m3 weights per channel, activations per token), checked against an explicit
dequantised product and, end to end, against the float32 model (relative L2 bound 8e-2, issue 7's).
"""

import dataclasses

import pytest
import torch

from fastltx.checkpoint.factory import random_transformer, transformer_config
from fastltx.layers.linear import Fp8Linear, quantize_rows
from fastltx.models.transformer import Perturbation
from tests.helpers import max_rel_error
from tests.parity.test_transformer import inputs


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(params=["v1", "v2"])
def model_and_inputs(request):
    model = random_transformer(transformer_config(request.param, num_layers=3), seed=4, dtype=torch.float32)
    return model, inputs(model, torch.float32, sigmas=(0.8, 0.3), clean_tokens=3)


PERTS = [Perturbation.stg([1]), Perturbation.isolate_modalities()]


@torch.no_grad()
def test_fused_projections(model_and_inputs):
    model, (v, a) = model_and_inputs
    want = model(v, a, PERTS)
    model.fuse_projections()
    assert hasattr(model.transformer_blocks[0].attn1, "to_qkv") and hasattr(model.transformer_blocks[0].attn2, "to_kv")
    got = model(v, a, PERTS)
    assert max(max_rel_error(g, w) for g, w in zip(got, want)) <= 1e-6


@torch.no_grad()
def test_cached_text(model_and_inputs):
    model, (v, a) = model_and_inputs
    if model.cfg.cross_attention_adaln:
        with pytest.raises(ValueError, match="LTX-2.3"):
            model.cache_text(v, a)
        return
    want = model(v, a, PERTS)
    got = model(v, a, PERTS, text_cache=model.cache_text(v, a))
    assert max(max_rel_error(g, w) for g, w in zip(got, want)) <= 1e-6
    # the pipelines run in inference mode: the cache is still made of tensors that keep a version
    # counter (graphed steps copy it into their buffers once, not at every step), with the same values
    with torch.inference_mode():
        cache = model.cache_text(v, a)
        tensors = [t for block in cache for kv in block if kv is not None for t in kv]
        assert tensors and not any(t.is_inference() for t in tensors)
        got = model(v, a, PERTS, text_cache=cache)
    assert max(max_rel_error(g, w) for g, w in zip(got, want)) <= 1e-6


def test_text_cache_store_of_a_slot_is_refilled_in_place():
    """With graphed blocks, ``cache_text(..., slot=...)`` keeps the cache in a store per slot, marked
    static for the graphs (read in place, never copied), refilled in place at every later call with
    that slot: the same tensors with the new contexts' keys and values; other slots, other stores;
    without graphs, or without a slot, a new cache each call."""
    from fastltx.runtime.cuda_graph import _signature
    model = random_transformer(transformer_config("v1", num_layers=2), seed=4, dtype=torch.float32)
    first, second = inputs(model, torch.float32, seed=1), inputs(model, torch.float32, seed=2)
    flat = lambda cache: [t for block in cache for kv in block for t in kv]  # noqa: E731
    with torch.inference_mode():
        want = [flat(model.cache_text(*x)) for x in (first, second)]
        assert flat(model.cache_text(*first, slot="simple"))[0] is not flat(model.cache_text(*first, slot="simple"))[0]
        model.graph_blocks()
        made = flat(model.cache_text(*first, slot="simple"))
        refilled = flat(model.cache_text(*second, slot="simple"))
        other = flat(model.cache_text(*first, slot="other"))
        got = model(*second, None, model.cache_text(*second, slot="simple"))
        ref = model(*second, None, model.cache_text(*second))
    assert all(x is y for x, y in zip(made, refilled))
    assert all(torch.equal(x, y) for x, y in zip(refilled, want[1]))
    assert all(torch.equal(x, y) for x, y in zip(other, want[0])) and other[0] is not made[0]
    assert all(not t.is_inference() for t in made)
    assert _signature(made[:1], [])[1][0][0] == "static"
    assert all(torch.equal(g, r) for g, r in zip(got, ref))  # the blocks on the store
    model.graph_blocks(False)
    with torch.inference_mode():
        assert flat(model.cache_text(*first, slot="simple"))[0] is not made[0]


def test_fp8_linear_is_the_dequantised_product():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 24)
    x = torch.randn(2, 5, 32) * 3
    q = Fp8Linear(lin)
    xq, xs = quantize_rows(x.reshape(-1, 32))
    assert xq.dtype == torch.float8_e4m3fn and q.weight.dtype == torch.float8_e4m3fn
    want = (xq.double() * xs.double()) @ (q.weight.double() * q.weight_scale.double().t()).t() + lin.bias.double()
    assert torch.allclose(q(x).double().view(-1, 24), want, rtol=1e-5, atol=1e-5)
    assert rel_l2(q(x), lin(x)) < 0.06  # e4m3 has 3 mantissa bits: a few percent


@torch.no_grad()
def test_fp8_weight_linear_is_the_dequantised_weight(monkeypatch):
    """Weight-only fp8: the input stays as it is, the weight is q(W) * sw; large weights are
    dequantised a block of output rows at a time, with the same result."""
    import fastltx.layers.linear as linear
    torch.manual_seed(1)
    lin = torch.nn.Linear(32, 24)
    x = torch.randn(2, 5, 32) * 3
    q = linear.Fp8WeightLinear(lin)
    assert q.weight.dtype == torch.float8_e4m3fn and q.weight.shape == (24, 32) and q.weight_scale.shape == (1, 24)
    want = torch.nn.functional.linear(x.double(), q.weight.double() * q.weight_scale.double().t(), lin.bias.double())
    whole = q(x)
    assert torch.allclose(whole.double(), want, rtol=1e-6, atol=1e-6)
    monkeypatch.setattr(linear, "WEIGHT_CHUNK", 5 * 32)  # blocks of 5 output rows, the last one short
    assert torch.allclose(q(x), whole, rtol=1e-6, atol=1e-6)  # (separate GEMMs: last-bit differences)
    assert 1e-3 < rel_l2(q(x), lin(x)) < 0.05  # weights alone: e4m3's 3 mantissa bits, a few percent
    bf = linear.Fp8WeightLinear(lin.to(torch.bfloat16))
    assert bf(x.to(torch.bfloat16)).dtype == torch.bfloat16


@torch.no_grad()
def test_fp8_model_error(model_and_inputs):
    model, (v, a) = model_and_inputs
    want = model(v, a)
    assert model.to_fp8() == 3 * (4 * 6 + 2 * 2)  # per block: 6 attentions x 4 linears, 2 FFs x 2
    got = model(v, a)
    errors = [rel_l2(g, w) for g, w in zip(got, want)]
    assert 1e-4 < max(errors) <= 8e-2, errors


@torch.no_grad()
def test_compiled_blocks_share_one_graph():
    import torch._dynamo as dynamo
    from fastltx.runtime.compile import compile_blocks, uncompile_blocks
    model = random_transformer(transformer_config("v1", num_layers=3), seed=5, dtype=torch.float32)
    v, a = inputs(model, torch.float32, sigmas=(0.6,))
    want = model(v, a)
    dynamo.reset()
    dynamo.utils.counters.clear()
    compile_blocks(model)
    try:
        got = model(v, a)
        assert dynamo.utils.counters["stats"]["unique_graphs"] == 1
    finally:
        uncompile_blocks(model)
        dynamo.reset()
    assert max(max_rel_error(g, w) for g, w in zip(got, want)) <= 1e-5
    assert dataclasses.is_dataclass(v)


def test_compiled_text_cache_equals_the_plain_one():
    """``compile_blocks`` routes the blocks' text keys and values through a compiled function too (one
    graph shared by the blocks): the same cache within float32 reordering, as tensors that keep a
    version counter in inference mode."""
    import torch._dynamo as dynamo
    from fastltx.runtime.compile import compile_blocks, uncompile_blocks
    model = random_transformer(transformer_config("v1", num_layers=3), seed=5, dtype=torch.float32)
    model.fuse_projections()
    v, a = inputs(model, torch.float32, sigmas=(0.6,))
    flat = lambda cache: [t for block in cache for kv in block if kv is not None for t in kv]  # noqa: E731
    with torch.no_grad():
        want = flat(model.cache_text(v, a))
    dynamo.reset()
    dynamo.utils.counters.clear()
    compile_blocks(model)
    try:
        with torch.inference_mode():
            got = flat(model.cache_text(v, a))
            again = flat(model.cache_text(v, a))  # no second graph
        assert dynamo.utils.counters["stats"]["unique_graphs"] == 1
    finally:
        uncompile_blocks(model)
        dynamo.reset()
    assert not any(name in block.__dict__ for block in model.transformer_blocks
                   for name in ("forward", "finish_pending", "text_keys_values"))
    assert len(got) == len(want) == 3 * 4 and not any(t.is_inference() for t in got)
    assert max(max_rel_error(g, w) for g, w in zip(got + again, want * 2)) <= 1e-5


def test_tuning_and_a_compile_mode_are_exclusive():
    from fastltx.runtime.compile import compile_blocks
    model = random_transformer(transformer_config("v1", num_layers=1), seed=5, dtype=torch.float32)
    with pytest.raises(ValueError, match="tune and mode are exclusive"):
        compile_blocks(model, mode="max-autotune", tune=True)
    assert "forward" not in model.transformer_blocks[0].__dict__  # nothing routed before the refusal


def test_compiling_raises_dynamos_recompile_limit(monkeypatch):
    """The block function compiles once per token count, group and collective form: Dynamo's
    default limit (8) is raised to RECOMPILE_LIMIT, a higher one kept."""
    import torch._dynamo as dynamo
    from fastltx.runtime.compile import RECOMPILE_LIMIT, compile_blocks
    model = random_transformer(transformer_config("v1", num_layers=1), seed=5, dtype=torch.float32)
    monkeypatch.setattr(dynamo.config, "recompile_limit", 8)
    compile_blocks(model)
    assert dynamo.config.recompile_limit == RECOMPILE_LIMIT
    monkeypatch.setattr(dynamo.config, "recompile_limit", 1000)
    compile_blocks(model)
    assert dynamo.config.recompile_limit == 1000


def test_quantize_rows_in_blocks_equals_at_once(monkeypatch):
    """Large eager inputs are quantised in row blocks (bounded temporaries): the same bits."""
    import fastltx.layers.linear as linear
    x = torch.randn(37, 64, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    want = quantize_rows(x)
    monkeypatch.setattr(linear, "QUANT_CHUNK", 5 * 64)  # blocks of 5 rows, the last one short
    got = linear.quantize_rows(x)
    assert torch.equal(got[0].view(torch.uint8), want[0].view(torch.uint8)) and torch.equal(got[1], want[1])


def test_quantize_rows_matches_the_plain_formula():
    """The lean passes compute what scale = amax|x| / 448, q = clamp(float(x) / scale) does."""
    g = torch.Generator().manual_seed(4)
    for dtype in (torch.bfloat16, torch.float32):
        x = (torch.randn(64, 96, generator=g) * torch.rand(64, 1, generator=g) * 10).to(dtype)
        x[3] = 0  # an all-zero row: the scale's floor
        scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / 448
        want = (x.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
        q, s = quantize_rows(x)
        assert torch.equal(s, scale) and torch.equal(q.view(torch.uint8), want.view(torch.uint8))
