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
    # eager: fp8 weights, matmuls in the run dtype; compiled: scaled fp8 matmuls (the quantisation fuses)
    from fastltx.layers.linear import Fp8Linear, Fp8WeightLinear
    ff = fp8.components._transformer.transformer_blocks[0].ff.net[2]
    assert type(ff) is Fp8WeightLinear
    compiled = load_pipeline("one-stage", files.checkpoint, files.text_encoder, device="cpu", dtype=torch.float32,
                             fp8=True, compile=True)
    assert type(compiled.components._transformer.transformer_blocks[0].ff.net[2]) is Fp8Linear


def test_fp8_with_switched_lora_is_refused(files):
    with pytest.raises(InputError, match="fp8 cannot be combined"):
        load_pipeline("two-stage", files.checkpoint, files.text_encoder, files.upsampler,
                      distilled_lora=files.stage2_loras[0], fp8=True)


def test_image_spec_parsing():
    assert ImageInput.parse("a.png") == ImageInput("a.png", 0, 1.0)
    assert ImageInput.parse("dir:x/a.png:16:0.5") == ImageInput("dir:x/a.png", 16, 0.5)
    with pytest.raises(InputError, match="PATH\\[:FRAME"):
        ImageInput.parse("a.png:1.5")
