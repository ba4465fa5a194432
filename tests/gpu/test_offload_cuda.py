"""Streaming on the GPU: pinned homes, the side stream and its events, fp8 scaled matmuls on views of
the slots (skipped without CUDA). The CPU tests (tests/unit/test_offload.py) run the same code with
synchronous copies; these check the asynchronous copies are ordered right."""

import pytest
import torch

from fastltx.checkpoint.factory import make_checkpoint
from fastltx.layers.linear import fp8_supported, to_fp8
from fastltx.models.transformer import fp8_linear, load_transformer, open_transformer
from fastltx.runtime.memory import usable_memory
from fastltx.runtime.offload import Offloaded, load_layered
from tests.helpers import modality_on
from tests.parity.test_transformer import inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
LAYERS = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "six.safetensors", "v1", seed=5, num_layers=LAYERS)


def cuda_inputs(model, **kw):
    """The parity tests' random inputs (built on the CPU), moved to the GPU."""
    return tuple(modality_on(m, "cuda") for m in inputs(model, torch.bfloat16, **kw))


def streamed(path, count, fp8=False, ahead=2):
    reader = open_transformer(path)
    off = Offloaded(reader.model, "cuda", reader.model.transformer_blocks, ahead)
    convert = (lambda layer: to_fp8(layer, fp8_linear)) if fp8 else None  # noqa: E731
    model = load_layered(reader, "transformer_blocks", "cuda", torch.bfloat16, convert, offload=off)
    off.admit(count)
    return model, off


@pytest.mark.parametrize("count,ahead", [(2, 2), (LAYERS, 2), (LAYERS, 1)])
def test_streamed_equals_resident_on_cuda(checkpoint, count, ahead):
    plain = load_transformer(checkpoint, "cuda", torch.bfloat16)
    x = cuda_inputs(plain, sigmas=(0.8, 0.3), clean_tokens=3)
    with torch.no_grad():
        want = [plain(*x) for _ in range(3)]
        model, off = streamed(checkpoint, count, ahead=ahead)
        assert off.groups[LAYERS - 1].home.is_pinned()
        got = [model(*x) for _ in range(3)]
    torch.cuda.synchronize()
    for g, w in zip(got, want):
        assert torch.equal(g[0], w[0]) and torch.equal(g[1], w[1])
    off.evict()
    assert torch.cuda.memory_allocated() < 2**30


@pytest.mark.skipif(not torch.cuda.is_available() or not fp8_supported("cuda"), reason="needs fp8 matmuls")
def test_fp8_streamed_equals_fp8_resident_on_cuda(checkpoint):
    with torch.no_grad():
        resident, _ = streamed(checkpoint, 0, fp8=True)
        x = cuda_inputs(resident, sigmas=(0.6,))
        want = resident(*x)
        cache = resident.cache_text(*x)
        want_cached = resident(*x, text_cache=cache)
        model, _ = streamed(checkpoint, 4, fp8=True)
        got = model(*x)
        # text K/V caching runs the blocks' attention parts outside the blocks' forward (the first
        # GPU run of the 16 GB plan failed there: fp8 weights still at their host homes)
        got_cached = model(*x, text_cache=model.cache_text(*x))
    torch.cuda.synchronize()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(got_cached[0], want_cached[0]) and torch.equal(got_cached[1], want_cached[1])


def test_usable_memory_follows_the_process_fraction():
    total = torch.cuda.get_device_properties(0).total_memory
    if not hasattr(torch.cuda, "get_per_process_memory_fraction"):
        pytest.skip("this torch cannot read the fraction back")
    before = torch.cuda.get_per_process_memory_fraction(0)
    try:
        torch.cuda.set_per_process_memory_fraction(4 * 2**30 / total, 0)
        assert usable_memory("cuda") <= 4 * 2**30
    finally:
        torch.cuda.set_per_process_memory_fraction(before, 0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from fastltx.pipelines.demo import demo_files
    return demo_files(tmp_path_factory.mktemp("demo"))


def test_fp8_weight_linear_on_cuda():
    """Weight-only fp8 in bf16 on the GPU: the product of the dequantised weight, as on the CPU."""
    from fastltx.layers.linear import Fp8WeightLinear
    lin = torch.nn.Linear(256, 384).to(torch.bfloat16)
    x = torch.randn(7, 256, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    cpu = Fp8WeightLinear(lin)
    gpu = Fp8WeightLinear(lin.cuda())
    assert torch.equal(gpu.weight.cpu().view(torch.uint8), cpu.weight.view(torch.uint8))
    assert torch.allclose(gpu(x.cuda()).float().cpu(), cpu(x).float(), rtol=2e-2, atol=2e-2)


def test_handed_in_text_encoder_converted_to_fp8_under_a_budget(demo, monkeypatch):
    """A text encoder handed in from host memory (as bench/memory.py does) is converted to its fp8
    form on the device when the plan gives it that form (a text stage that fits no other), homed in
    pinned memory, and encodes within the fp8 form's error."""
    from fastltx.layers.linear import Fp8WeightLinear
    from fastltx.models.text_encoder import load_text_encoder
    from fastltx.pipelines import Components, ModelFiles
    from fastltx.pipelines.memory import ModelMemory
    from fastltx.runtime.memory import MiB, StageNeed
    host = load_text_encoder(demo.text_encoder, demo.checkpoint, "cpu", torch.bfloat16)
    want = host.to("cuda").encode(["a fox"]).video.float()
    host.to("cpu")
    components = Components(ModelFiles(demo.checkpoint), "cuda", torch.bfloat16, fp8=True, memory="1g")
    components.__dict__["text_encoder"] = host
    memory = components.memory
    text = memory.size("text_encoder")
    budget = int(2**30 * 0.96) - 256 * MiB  # budget_for("1g") on a card with more than 1 GiB free
    monkeypatch.setattr(ModelMemory, "stage_needs", lambda self, *a: [
        StageNeed("text", ("text_encoder",), budget - text.total(fp8=True) - 1000)])
    plan = memory.plan_call(64, 64, 9, 24.0, two_stage=False)
    assert plan.budget == budget and plan.form("text_encoder").fp8 and plan.form("text_encoder").streamed == 0
    assert host._fastltx_fp8
    assert isinstance(host.processor.video_connector.transformer_1d_blocks[0].attn1.to_q, Fp8WeightLinear)
    assert memory.offloaded["text_encoder"].groups["rest"].home.is_pinned()
    got = components.text_encoder.encode(["a fox"]).video.float()
    assert 1e-4 < ((got - want).norm() / want.norm()).item() < 5e-2


def test_models_handed_in_on_cuda_are_held_where_they_are(demo):
    """A pipeline made for "cuda" (no index) finds models handed in on the GPU (whose tensors say
    "cuda:0") on its device: held, never re-homed. (Compared with the index-less device, bench/pipeline.py's
    models counted as elsewhere: --memory full then saw no model held, and auto copied them in again.)"""
    from fastltx.models.text_encoder import load_text_encoder
    from fastltx.pipelines import Components, ModelFiles
    model = load_text_encoder(demo.text_encoder, demo.checkpoint, "cuda", torch.bfloat16)
    ptr = next(model.parameters()).data_ptr()
    components = Components(ModelFiles(demo.checkpoint), "cuda", torch.bfloat16, memory="full")
    assert components.device == torch.device("cuda", torch.cuda.current_device())
    components.__dict__["text_encoder"] = model
    components.memory.plan_call(64, 64, 9, 24.0, two_stage=False)
    assert "text_encoder" in components.memory.residency.loaded and not components.memory.offloaded
    assert components.text_encoder is model and next(model.parameters()).data_ptr() == ptr
