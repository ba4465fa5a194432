"""CUDA-graph plumbing (fastltx/runtime/cuda_graph.py) on the CPU: input signatures, rebuilt
structures, and the model's graphed-blocks path falling through to the plain one without CUDA. The
graphs themselves run in tests/gpu/test_cuda_graph.py."""

import pytest
import torch

from fastltx.checkpoint.factory import random_transformer, transformer_config
from fastltx.layers.rope import Rope, RopeLayout
from fastltx.models.transformer.block import BlockSkips
from fastltx.runtime.cuda_graph import GraphedCall, _rebuild, _signature
from tests.parity.test_transformer import inputs

L = RopeLayout.SPLIT


def test_signature_tells_shapes_values_and_objects_apart():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    group = object()
    base = ([a, {"k": BlockSkips(keep=b)}], Rope(a, b, L), 3, group)
    leaves = []
    key = _signature(base, leaves)
    assert [id(t) for t in leaves] == [id(a), id(b), id(a), id(b)]
    assert _signature(([b, {"k": BlockSkips(keep=a)}], Rope(b, a, L), 3, group), []) == key  # values don't count
    for other in [([a.T, {"k": BlockSkips(keep=b)}], Rope(a, b, L), 3, group),          # strides
                  ([a, {"k": BlockSkips(all=True)}], Rope(a, b, L), 3, group),           # plain values
                  ([a, {"k": BlockSkips(keep=b)}], Rope(a, b, L), 4, group),
                  ([a, {"k": BlockSkips(keep=b.half())}], Rope(a, b, L), 3, group),      # dtypes
                  ([a, {"k": BlockSkips(keep=b)}], Rope(a, b, L), 3, object())]:         # objects by identity
        assert _signature(other, []) != key


def test_rebuild_puts_new_tensors_in_the_same_structure():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    base = ([a, {"k": BlockSkips(keep=b)}], Rope(a, b, L), 3)
    fresh = [torch.full((2, 3), float(i)) for i in range(4)]
    out = _rebuild(base, iter(fresh))
    assert out[0][0] is fresh[0] and out[0][1]["k"].keep is fresh[1] and isinstance(out[1], Rope)
    assert out[1].cos is fresh[2] and out[1].sin is fresh[3] and out[2] == 3
    assert base[0][1]["k"].keep is b  # the template is untouched


@torch.no_grad()
def test_graphed_blocks_without_cuda_run_the_plain_path():
    model = random_transformer(transformer_config("v1", num_layers=2), seed=3, dtype=torch.float32)
    v, a = inputs(model, torch.float32, sigmas=(0.7,))
    want = model(v, a)
    model.graph_blocks()
    assert isinstance(model.__dict__["graphed_blocks"], GraphedCall)
    for _ in range(3):
        got = model(v, a)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
    model.graph_blocks(False)
    assert "graphed_blocks" not in model.__dict__


def test_streamed_blocks_are_refused():
    model = random_transformer(transformer_config("v1", num_layers=1), seed=3, dtype=torch.float32)
    handle = model.transformer_blocks[0].register_forward_pre_hook(lambda module, args: None)
    try:
        with pytest.raises(ValueError, match="resident"):
            model.graph_blocks()
        assert "graphed_blocks" not in model.__dict__
    finally:
        handle.remove()


def test_graph_weights_follow_replaced_modules():
    model = random_transformer(transformer_config("v1", num_layers=2), seed=3, dtype=torch.float32)
    model.graph_blocks(capture_error_mode="thread_local")
    before = model.__dict__["graphed_blocks"]
    model.fuse_projections()  # replaces the q/k/v linears: the graphs must read the fused weights
    after = model.__dict__["graphed_blocks"]
    assert after is not before and after.capture_error_mode == "thread_local"
    blocks = model.transformer_blocks
    assert {id(t) for t in after.weights()} == {id(t) for t in [*blocks.parameters(), *blocks.buffers()]}
    model.to(torch.float64)  # .to() replaces the buffers: the weights are looked up anew, none held
    assert {id(t) for t in after.weights()} == {id(t) for t in [*blocks.parameters(), *blocks.buffers()]}
    model.graph_blocks(False)
    model.to_fp8(weight_only=True)
    assert "graphed_blocks" not in model.__dict__  # not graphed: stays so


def test_graphs_go_with_their_model_without_the_cycle_collector():
    import gc
    import weakref
    model = random_transformer(transformer_config("v1", num_layers=1), seed=3, dtype=torch.float32)
    model.graph_blocks()
    graphs, owner = weakref.ref(model.__dict__["graphed_blocks"]), weakref.ref(model)
    gc.disable()
    try:
        del model  # no reference cycle through the graphed call: freed at once, graph memory included
        assert owner() is None and graphs() is None
    finally:
        gc.enable()


def test_weights_found_elsewhere_drop_the_graphs():
    weights = [torch.zeros(3), torch.zeros(4)]
    graphed = GraphedCall(lambda x: x, weights=lambda: weights)
    key, leaves = graphed.signature((torch.ones(2),))
    assert len(leaves) == 1 and graphed.placed == (weights[0].data_ptr(), weights[1].data_ptr())
    graphed.graphs[key] = "recorded"  # (a stand-in: graphs need CUDA)
    assert graphed.signature((torch.ones(2),))[0] == key and key in graphed.graphs  # same places: kept
    weights[1] = torch.ones(4)  # moved or replaced: another address
    assert graphed.signature((torch.ones(2),))[0] == key and not graphed.graphs
    assert graphed.placed[1] == weights[1].data_ptr()


def test_a_copy_of_a_graphed_model_has_no_graphs():
    import copy
    model = random_transformer(transformer_config("v1", num_layers=1), seed=3, dtype=torch.float32)
    model.graph_blocks()
    twin = copy.deepcopy(model)
    assert twin.__dict__["graphed_blocks"] is None and isinstance(model.__dict__["graphed_blocks"], GraphedCall)
    v, a = inputs(twin, torch.float32, sigmas=(0.7,))
    with torch.no_grad():
        assert all(torch.equal(x, y) for x, y in zip(twin(v, a), model(v, a)))  # the copy runs its own blocks


def test_only_passes_up_to_the_token_limit_take_the_graphs(monkeypatch):
    from fastltx.models.transformer import model as module
    model = random_transformer(transformer_config("v1", num_layers=1), seed=3, dtype=torch.float32)
    calls = []
    model.__dict__["graphed_blocks"] = lambda *args: calls.append(1) or model.run_blocks(*args)  # a spy
    v, a = inputs(model, torch.float32, sigmas=(0.7, 0.4))  # a batch of two passes
    tokens = v.latent.shape[0] * v.latent.shape[1]  # the batch counts: the GPU's work grows with it
    with torch.no_grad():
        monkeypatch.setattr(module, "GRAPH_MAX_TOKENS", tokens)
        model(v, a)
        monkeypatch.setattr(module, "GRAPH_MAX_TOKENS", tokens - 1)  # larger passes: launch-cheap, plain
        model(v, a)
    assert calls == [1]
