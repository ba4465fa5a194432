"""Every way a checkpoint can be unusable gives one clear line naming the file and the problem."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fastltx.checkpoint import CheckpointError
from fastltx.checkpoint.factory import make_checkpoint
from fastltx.models.transformer import load_transformer


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("good") / "tiny.safetensors", "v1", seed=0)


def read_all(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def rewrite(path, tmp_path, edit_tensors=None, edit_config=None, metadata=None):
    tensors, meta = read_all(path)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        cfg = json.loads(meta["config"])
        edit_config(cfg)
        meta["config"] = json.dumps(cfg)
    out = tmp_path / "edited.safetensors"
    save_file(tensors, str(out), metadata=meta if metadata is None else metadata)
    return out


def expect(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        load_transformer(path, dtype=torch.float32)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_good_checkpoint_loads_without_meta_tensors(good):
    model = load_transformer(good, dtype=torch.float32)
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and not any(t.is_meta for t in tensors)
    assert all(t.dtype == torch.float32 for t in tensors)


def test_missing_file(tmp_path):
    expect(tmp_path / "nope.safetensors", "no such file")


def test_directory_is_not_a_file(tmp_path):
    expect(tmp_path, "not a file")


@pytest.mark.parametrize("content", [b"", b"abc", b"\xff" * 64, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}!!!!!"])
def test_not_safetensors(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    expect(path, "not a safetensors file")


def test_no_config_in_header(good, tmp_path):
    expect(rewrite(good, tmp_path, metadata={"model_version": "2.0.0"}), "no 'config'")


def test_config_not_json(good, tmp_path):
    expect(rewrite(good, tmp_path, metadata={"config": "{oops"}), "not valid JSON")


def test_no_transformer_section(good, tmp_path):
    expect(rewrite(good, tmp_path, edit_config=lambda c: c.pop("transformer")), "no 'transformer' section")


@pytest.mark.parametrize("key,value", [("attention_bias", False), ("rope_type", "spiral"),
                                       ("qk_norm", "layer_norm"), ("frequencies_precision", "float16")])
def test_unknown_layout(good, tmp_path, key, value):
    expect(rewrite(good, tmp_path, edit_config=lambda c: c["transformer"].update({key: value})),
           "unknown transformer layout", key)


@pytest.mark.parametrize("key", ["rope_type", "av_ca_timestep_scale_multiplier", "num_layers", "caption_channels"])
def test_required_key_missing(good, tmp_path, key):
    """Keys whose reference defaults differ from the released files are never filled in silently."""
    expect(rewrite(good, tmp_path, edit_config=lambda c: c["transformer"].pop(key)), "required key", key)


def test_missing_tensors(good, tmp_path):
    def drop(t):
        for k in [k for k in t if ".attn1." in k]:
            del t[k]
    expect(rewrite(good, tmp_path, edit_tensors=drop), "20 missing tensor", "transformer_blocks.0.attn1.k_norm.weight",
           "(and 15 more)")


def test_unexpected_tensor(good, tmp_path):
    def add(t):
        t["model.diffusion_model.transformer_blocks.0.attn1.to_x.weight"] = torch.zeros(2, 2)
    expect(rewrite(good, tmp_path, edit_tensors=add), "unexpected tensor", "to_x.weight")


def test_shape_mismatch(good, tmp_path):
    def grow(t):
        k = "model.diffusion_model.proj_out.weight"
        t[k] = torch.zeros(t[k].shape[0] + 1, t[k].shape[1], dtype=t[k].dtype)
    expect(rewrite(good, tmp_path, edit_tensors=grow), "shape mismatch", "proj_out.weight", "[129, 32]", "[128, 32]")


def test_geometry_comes_from_the_header(good, tmp_path):
    """A header that disagrees with the tensors (here: more blocks than stored) is caught, not papered over."""
    expect(rewrite(good, tmp_path, edit_config=lambda c: c["transformer"].update(num_layers=3)),
           "missing tensor", "transformer_blocks.2.")


def test_audio_requested_from_video_only_file(tmp_path):
    path = make_checkpoint(tmp_path / "video.safetensors", "v1", audio=False)
    expect(path, "no audio stream")
    assert load_transformer(path, audio=False).cfg.audio is None


def test_no_partial_file_on_failure(tmp_path, monkeypatch):
    import fastltx.checkpoint.factory as factory

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(factory, "save_file", boom)
    with pytest.raises(OSError):
        factory.make_checkpoint(tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []
