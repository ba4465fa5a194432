"""load_pipeline and pipeline calls: options and bad input, caught before any model loads."""

import pytest
import torch

from fastltx.pipelines import ImageInput, InputError, load_pipeline
from fastltx.pipelines.demo import demo_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return demo_files(tmp_path_factory.mktemp("models"))


def test_unknown_pipeline(files):
    with pytest.raises(InputError, match="unknown pipeline 'fast'"):
        load_pipeline("fast", files.checkpoint, files.text_encoder)


@pytest.mark.parametrize("name,kwargs,message", [
    ("distilled", {}, "needs a latent upsampler"),
    ("two-stage", {"upsampler": True}, "needs the distilled LoRA"),
    ("one-stage", {"text_encoder": None}, "needs a Gemma 3 text encoder"),
])
def test_missing_files(files, name, kwargs, message):
    args = dict(text_encoder=files.text_encoder, upsampler=None)
    if kwargs.get("upsampler"):
        args["upsampler"] = files.upsampler
    if "text_encoder" in kwargs:
        args["text_encoder"] = None
    with pytest.raises(InputError, match=message):
        load_pipeline(name, files.checkpoint, **args)


def test_missing_path(files, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_pipeline("one-stage", tmp_path / "nope.safetensors", files.text_encoder)


def test_a_cuda_device_that_is_not_there(files):
    """A CUDA device this machine lacks is refused by name, before anything loads (not a bare
    assertion from torch.cuda)."""
    missing = f"cuda:{torch.cuda.device_count()}"  # the first index past the GPUs (cuda:0 on a CPU machine)
    with pytest.raises(InputError, match=f"device {missing} asked for, but {torch.cuda.device_count()} CUDA"):
        load_pipeline("one-stage", files.checkpoint, files.text_encoder, device=missing)


def test_cuda_graphs_need_a_gpu_and_every_model_resident(files):
    from fastltx.pipelines.components import check_cuda_graphs
    from fastltx.runtime.memory import parse_memory
    with pytest.raises(InputError, match="CUDA graphs need a CUDA device and memory 'full'.*cpu and memory 'full'"):
        load_pipeline("one-stage", files.checkpoint, files.text_encoder, device="cpu", memory="full", cuda_graphs=True)
    cuda = torch.device("cuda", 0)  # (a device object: no GPU needed to check the settings)
    for memory in ("auto", "24g"):
        with pytest.raises(InputError, match=f"got device cuda:0 and memory '{memory}'"):
            check_cuda_graphs(cuda, parse_memory(memory))
    check_cuda_graphs(cuda, parse_memory("full"))  # offered


def test_cuda_graphs_over_several_processes_are_checked_alike(files):
    """Several processes are no reason to refuse (the collectives run between graph pieces); a
    world on the CPU is refused for its device, as one process would be."""
    from types import SimpleNamespace
    world = SimpleNamespace(size=2, device=torch.device("cpu"))
    with pytest.raises(InputError, match="CUDA graphs need a CUDA device and memory 'full'.*cpu and memory 'full'"):
        load_pipeline("one-stage", files.checkpoint, files.text_encoder, world=world, memory="full", cuda_graphs=True)


def test_cuda_graphs_reach_the_transformer(files):
    from fastltx.runtime.cuda_graph import GraphedCall
    pipe = load_pipeline("one-stage", files.checkpoint, files.text_encoder, device="cpu", memory="full")
    pipe.components.cuda_graphs = True  # (refused on the CPU at load: set after, to see the wiring)
    assert isinstance(pipe.components.transformer().__dict__["graphed_blocks"], GraphedCall)


@pytest.mark.parametrize("call,message", [
    (dict(height=100, width=192), "multiples of 64"),
    (dict(num_frames=16), "8k\\+1"),
    (dict(fps=0.0), "fps must be a positive"),
    (dict(images=[ImageInput("/nonexistent.png")]), "no such image"),
])
def test_bad_calls_fail_before_loading(files, call, message):
    pipe = load_pipeline("distilled", files.checkpoint, files.text_encoder, files.upsampler, device="cpu")
    args = dict(height=128, width=192, num_frames=17, fps=24.0) | call
    with pytest.raises(InputError, match=message):
        pipe("a prompt", progress=False, **args)
    assert pipe.components.loaded == []  # nothing was loaded


def test_fp8_runs_and_stays_close(files):
    kw = dict(seed=1, height=64, width=96, num_frames=9, fps=24.0, steps=2, tiling=None, progress=False)
    plain = load_pipeline("one-stage", files.checkpoint, files.text_encoder, device="cpu", dtype=torch.float32)
    fp8 = load_pipeline("one-stage", files.checkpoint, files.text_encoder, device="cpu", dtype=torch.float32, fp8=True)
    a, b = plain("a prompt", **kw), fp8("a prompt", **kw)
    assert a.video.shape == b.video.shape and not torch.equal(a.video, b.video)
    assert (a.video.float() - b.video.float()).abs().mean() < 20  # quantised, not broken
    # eager (and wherever fp8 matmuls are missing): fp8 weights, matmuls in the run dtype
    from fastltx.layers.linear import Fp8WeightLinear
    assert type(fp8.components._transformer.transformer_blocks[0].ff.net[2]) is Fp8WeightLinear


def test_which_fp8_the_transformer_takes(monkeypatch):
    """Scaled fp8 matmuls only compiled on a GPU that has them (the quantisation fuses); else fp8
    weights dequantised for matmuls in the run dtype."""
    import fastltx.layers.linear as linear
    from fastltx.models.transformer.model import fp8_weight_only
    assert fp8_weight_only(False, "cpu") and fp8_weight_only(True, "cpu")
    monkeypatch.setattr(linear, "fp8_supported", lambda device: True)
    assert fp8_weight_only(False, "cuda") and not fp8_weight_only(True, "cuda")
    monkeypatch.setattr(linear, "fp8_supported", lambda device: False)  # e.g. an Ampere card
    assert fp8_weight_only(True, "cuda")


def test_fp8_with_switched_lora_is_refused(files):
    with pytest.raises(InputError, match="fp8 cannot be combined"):
        load_pipeline("two-stage", files.checkpoint, files.text_encoder, files.upsampler,
                      distilled_lora=files.stage2_loras[0], fp8=True)


def test_image_spec_parsing():
    assert ImageInput.parse("a.png") == ImageInput("a.png", 0, 1.0)
    assert ImageInput.parse("dir:x/a.png:16:0.5") == ImageInput("dir:x/a.png", 16, 0.5)
    with pytest.raises(InputError, match="PATH\\[:FRAME"):
        ImageInput.parse("a.png:1.5")


def test_sequence_exchange_is_checked_and_reaches_the_transformer(files):
    with pytest.raises(InputError, match="unknown sequence exchange 'ring'; choose one of auto, heads, keys, push"):
        load_pipeline("one-stage", files.checkpoint, files.text_encoder, device="cpu", sequence_exchange="ring")
    pipe = load_pipeline("one-stage", files.checkpoint, files.text_encoder, device="cpu", sequence_exchange="keys")
    assert pipe.components._transformer.sequence_exchange == "keys"
