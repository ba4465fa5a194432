"""The transformer's blocks through CUDA graphs (model.graph_blocks) give what the plain blocks give,
eager and compiled, bf16 and fp8, and so does the text cache made for them (skipped without CUDA)."""

import pytest
import torch

from fastltx.checkpoint.factory import random_transformer, transformer_config
from fastltx.layers.linear import fp8_supported
from tests.gpu.test_offload_cuda import cuda_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def model_on_cuda(fp8=False):
    model = random_transformer(transformer_config("v1", num_layers=3), seed=6, device="cuda", dtype=torch.bfloat16)
    model.fuse_projections()
    if fp8:
        model.to_fp8()
    return model


@pytest.mark.parametrize("compiled,fp8", [(False, False), (True, False), (True, True)])
def test_graphed_blocks_equal_plain_blocks(compiled, fp8):
    if fp8 and not fp8_supported("cuda"):
        pytest.skip("needs fp8 matmuls")
    import torch._dynamo as dynamo
    from fastltx.runtime.compile import compile_blocks
    model = model_on_cuda(fp8)
    calls = [cuda_inputs(model, sigmas=(0.8,), seed=s) for s in (1, 2, 3)] + [cuda_inputs(model, sigmas=(0.5, 0.3))]
    dynamo.reset()
    if compiled:
        compile_blocks(model)
    with torch.no_grad():
        caches = [model.cache_text(v, a) for v, a in calls]
        want = [model(v, a, None, c) for (v, a), c in zip(calls, caches)]
        model.graph_blocks()
        got = [model(v, a, None, c) for _ in range(3) for (v, a), c in zip(calls, caches)]  # records, then replays
    graphs = model.__dict__["graphed_blocks"].graphs
    assert len(graphs) == 2 and all(g is not None for g in graphs.values())  # one per shape, both recorded
    for i, g in enumerate(got):
        w = want[i % len(calls)]
        assert torch.equal(g[0], w[0]) and torch.equal(g[1], w[1]), i
    # weights moved away and back (as a memory plan does): their device memory is freed (the graphs
    # hold no weights), and the calls after give the same results (new graphs where the weights came
    # back elsewhere, not replays reading freed memory)
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    model.to("cpu")
    assert before - torch.cuda.memory_allocated() >= 0.9 * weights
    model.to("cuda")
    with torch.no_grad():
        moved = [model(v, a, None, c) for _ in range(3) for (v, a), c in zip(calls, caches)]
    assert len(graphs) == 2 and all(g is not None for g in graphs.values())
    for i, g in enumerate(moved):
        w = want[i % len(calls)]
        assert torch.equal(g[0], w[0]) and torch.equal(g[1], w[1]), i
    dynamo.reset()


def test_graphed_steps_copy_a_text_cache_once():
    """As a pipeline runs (inference mode, one text cache for every step): the recording copies the
    cache into its buffers at its first step only, and a new cache (the next generation) is copied."""
    model = model_on_cuda()
    (v, a), (v2, a2) = cuda_inputs(model, sigmas=(0.8,), seed=1), cuda_inputs(model, sigmas=(0.8,), seed=2)
    with torch.inference_mode():
        first, second = model.cache_text(v, a), model.cache_text(v2, a2)  # other contexts, other caches
        want = [model(v, a, None, c) for c in (first, second)]
        model.graph_blocks()
        for _ in range(2):  # as is, recorded
            model(v, a, None, first)
        graph = next(iter(model.__dict__["graphed_blocks"].graphs.values()))
        cached = [i for i, buffer in enumerate(graph.inputs) if buffer.shape == first[0][0][0].shape]
        assert cached
        copies = []
        real_copy = torch.Tensor.copy_

        def counted(buffer, t, *args, **kwargs):
            copies.append(any(buffer is graph.inputs[i] for i in cached))
            return real_copy(buffer, t, *args, **kwargs)
        torch.Tensor.copy_ = counted
        try:
            got = [model(v, a, None, c)[0].clone() for c in (first, first, second, second)]
        finally:
            torch.Tensor.copy_ = real_copy
    # the recording saw ``first`` last: no copy of it, then one set of copies for ``second``
    assert sum(copies) == len(cached)
    for g, w in zip(got, (want[0][0], want[0][0], want[1][0], want[1][0])):
        assert torch.equal(g, w)


def test_text_store_refilled_through_a_graph_and_read_in_place():
    """``cache_text`` with a slot on graphed blocks (as ``SimpleDenoiser`` calls it): the store is
    refilled through a recorded CUDA graph (the eager cache's keys and values within bf16 rounding),
    the blocks' recording reads the store itself (among its input buffers, not a copy of it), and
    graphed steps on it give the plain steps' results on an eager cache."""
    model = model_on_cuda()
    calls = [cuda_inputs(model, sigmas=(0.8,), seed=s) for s in (1, 2, 3, 4)]
    close = dict(rtol=1.6e-2, atol=1e-2)
    with torch.inference_mode():
        caches = [model.cache_text(v, a) for v, a in calls]
        want = [model(v, a, None, c) for (v, a), c in zip(calls, caches)]
        model.graph_blocks()
        got, stored = [], []
        for v, a in calls:  # the store made, refilled as is, recorded, replayed
            cache = model.cache_text(v, a, slot="simple")
            stored.append([t.clone() for block in cache for kv in block for t in kv])
            got.append([tuple(o.clone() for o in model(v, a, None, cache)) for _ in range(3)])
    filler = model.__dict__["graphed_text"]
    assert len(filler.graphs) == 1 and next(iter(filler.graphs.values())) is not None  # recorded
    store = filler.stores["simple"][1]
    graph = next(iter(model.__dict__["graphed_blocks"].graphs.values()))
    assert any(buffer is store[0][0][0] for buffer in graph.inputs)
    assert not any(buffer.data_ptr() == store[0][0][0].data_ptr() and buffer is not store[0][0][0]
                   for buffer in graph.inputs)
    for i, (cache, kept) in enumerate(zip(caches, stored)):
        for x, y in zip(kept, [t for block in cache for kv in block for t in kv]):
            torch.testing.assert_close(x, y, **close, msg=f"call {i}")
    for i, (steps, w) in enumerate(zip(got, want)):
        for step in steps:
            for x, y in zip(step, w):
                torch.testing.assert_close(x, y, **close, msg=f"call {i}")


@pytest.mark.parametrize("fp8", [False, True])
def test_compiled_text_cache_on_cuda(fp8):
    """The compiled text cache (``compile_blocks``) against the plain one, bf16 and fp8 on the GPU:
    keys and values within bf16 rounding (Inductor may add the bias after the GEMM, or fuse the norm)."""
    if fp8 and not fp8_supported("cuda"):
        pytest.skip("needs fp8 matmuls")
    import torch._dynamo as dynamo
    from fastltx.runtime.compile import compile_blocks, uncompile_blocks
    model = model_on_cuda(fp8)
    v, a = cuda_inputs(model, sigmas=(0.8,), seed=1)
    with torch.inference_mode():
        want = model.cache_text(v, a)
        dynamo.reset()
        compile_blocks(model)
        try:
            got = model.cache_text(v, a)
        finally:
            uncompile_blocks(model)
            dynamo.reset()
    for block_got, block_want in zip(got, want):
        for kv_got, kv_want in zip(block_got, block_want):
            for x, y in zip(kv_got, kv_want):
                torch.testing.assert_close(x, y, rtol=1.6e-2, atol=1e-2)


def test_first_replay_waits_for_what_the_recording_ran_eagerly():
    """A step between graph pieces runs once eagerly while recording (on buffers the recorded kernels
    have not filled), on the recording's side stream; the caller's stream must wait for it before
    the first replay, else a late write of it lands over the replay's own (the first graphed step
    on two GPUs with the "keys" exchange came out wrong that way: its all-gather at recording time
    still ran). Here the step, off the default stream (warm-up, recording), sleeps on the GPU and then
    writes -1, and the next piece sleeps longer before it reads: a first replay that does not wait
    reads the -1."""
    from fastltx.runtime.cuda_graph import GraphedCall, between_pieces

    def fn(x):
        y = x * 2
        out = torch.empty_like(y)

        def step():
            if torch.cuda.current_stream() != torch.cuda.default_stream():
                torch.cuda._sleep(100_000_000)  # ~60 ms of GPU clock cycles
                out.fill_(-1)
            else:
                out.copy_(y)
        between_pieces(step, y, out)
        torch.cuda._sleep(200_000_000)
        return out + 1

    graphed = GraphedCall(fn)
    x = torch.arange(4096.0, device="cuda")
    with torch.no_grad():
        for scale in (1.0, 2.0, 3.0):  # as is, recorded then replayed, replayed
            got = graphed(x * scale).clone()
            assert torch.equal(got, x * scale * 2 + 1), scale
    assert len(next(iter(graphed.graphs.values())).pieces.held) == 1
