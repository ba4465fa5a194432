"""The text path without the reference: directory and checkpoint errors, weight layouts, the factory's
Gemma directory, the batched register replacement and the sliced normalisations."""

import json
import shutil

import pytest
import torch

from fastltx.checkpoint import CheckpointError
from fastltx.checkpoint.factory import make_checkpoint
from fastltx.models.text_encoder import (TextEncoding, load_gemma, load_text_encoder, load_text_processor,
                                         read_gemma_directory)
from fastltx.models.text_encoder.connector import compact_with_registers
from fastltx.models.text_encoder.features import masked_range_norm, token_rms_norm
from fastltx.models.text_encoder.tiny import gemma_geometry, write_gemma
from tests.unit.test_checkpoint_errors import rewrite

PARTS = ("transformer", "text_projection", "text_connectors")
LENGTH = 32


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    return write_gemma(tmp_path_factory.mktemp("gemma") / "gemma", "tiny", seed=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "v1.safetensors", "v1", seed=2, parts=PARTS)


def copy_without(src, dst, *names):
    shutil.copytree(src, dst)
    for name in names:
        (dst / name).unlink()
    return dst


def expect(fn, *fragments):
    with pytest.raises(CheckpointError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def test_directory_without_tokenizer(gemma_dir, checkpoint, tmp_path):
    bad = copy_without(gemma_dir, tmp_path / "g", "tokenizer.json", "tokenizer_config.json")
    expect(lambda: load_text_encoder(bad, checkpoint), str(bad), "no tokenizer", "tokenizer.json", "tokenizer.model")


def test_non_gemma_config(gemma_dir, checkpoint, tmp_path):
    bad = copy_without(gemma_dir, tmp_path / "g")
    (bad / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 32}))
    expect(lambda: load_text_encoder(bad, checkpoint), str(bad), "'llama' model, not Gemma 3")


def test_other_directory_problems(gemma_dir, tmp_path):
    expect(lambda: read_gemma_directory(tmp_path / "nope"), "not a directory")
    expect(lambda: read_gemma_directory(copy_without(gemma_dir, tmp_path / "a", "config.json")), "no config.json")
    expect(lambda: read_gemma_directory(copy_without(gemma_dir, tmp_path / "b", "model.safetensors")),
           "no safetensors weights")
    bad = copy_without(gemma_dir, tmp_path / "c")
    (bad / "config.json").write_text("{")
    expect(lambda: read_gemma_directory(bad), "config.json is not valid JSON")


def test_projection_not_matching_gemma_fails_before_any_weight_is_read(gemma_dir, checkpoint, tmp_path):
    """A Gemma 3 with another hidden size: the error names both widths; the weights are never read
    (they are garbage here, so reading them would fail differently)."""
    bad = copy_without(gemma_dir, tmp_path / "g")
    config = json.loads((bad / "config.json").read_text())
    config["text_config"]["hidden_size"] = 48
    (bad / "config.json").write_text(json.dumps(config))
    (bad / "model.safetensors").write_bytes(b"\0" * 64)
    expect(lambda: load_text_encoder(bad, checkpoint), str(checkpoint), "text_embedding_projection.aggregate_embed",
           "takes 128 features", "gives 192 (hidden size 48 x 4 hidden states)")


def test_checkpoint_header_problems(checkpoint, tmp_path):
    gemma = gemma_geometry("tiny")

    def edited(**changes):
        def edit(cfg):
            for k, v in changes.items():
                if v is None:
                    cfg["transformer"].pop(k)
                else:
                    cfg["transformer"][k] = v
        return rewrite(checkpoint, tmp_path, edit_config=edit)

    expect(lambda: load_text_processor(edited(caption_proj_before_connector=True), gemma),
           "LTX-2.3 keys present but caption_proj_input_norm, caption_projection_first_linear")
    expect(lambda: load_text_processor(edited(connector_positional_embedding_max_pos=None), gemma),
           "lacks the required key 'connector_positional_embedding_max_pos'")
    expect(lambda: load_text_processor(edited(rope_type="spiral"), gemma), "rope_type='spiral'")
    no_projection = rewrite(checkpoint, tmp_path, edit_tensors=lambda t: t.pop(
        "text_embedding_projection.aggregate_embed.weight"))
    expect(lambda: load_text_processor(no_projection, gemma),
           "text_embedding_projection.aggregate_embed.weight is missing")
    no_register = rewrite(checkpoint, tmp_path, edit_tensors=lambda t: t.pop(
        "model.diffusion_model.video_embeddings_connector.learnable_registers"))
    expect(lambda: load_text_processor(no_register, gemma), "text processor: 1 missing tensor(s)",
           "video_connector.learnable_registers")


def test_only_the_language_model_is_held(gemma_dir):
    gemma = load_gemma(gemma_dir, dtype=torch.float32, max_length=LENGTH)
    names = [n for n, _ in gemma.named_parameters()]
    assert names and all(n.startswith("language_model.") for n in names)
    assert not any("vision" in n or "lm_head" in n or "multi_modal" in n for n in names)
    assert not any(t.is_meta for t in [*gemma.parameters(), *gemma.buffers()])
    with pytest.raises(TypeError):
        gemma.tokenize("one prompt, not a list")


def hidden_states(gemma, prompts=("a cat", "")):
    with torch.no_grad():
        return gemma(*gemma.tokenize(list(prompts)))


def test_sharded_and_transformers_saved_layouts_load_alike(gemma_dir, tmp_path):
    """The same weights as two shards with an index, and as saved by transformers itself
    (``model.language_model.*`` names), give the same hidden states as the official layout."""
    from transformers import Gemma3ForConditionalGeneration
    base = hidden_states(load_gemma(gemma_dir, dtype=torch.float32, max_length=LENGTH))
    sharded = write_gemma(tmp_path / "sharded", "tiny", seed=1, shards=2)
    assert sorted(p.name for p in sharded.glob("*.safetensors")) == ["model-00001-of-00002.safetensors",
                                                                     "model-00002-of-00002.safetensors"]
    assert torch.equal(hidden_states(load_gemma(sharded, dtype=torch.float32, max_length=LENGTH)), base)

    hf = Gemma3ForConditionalGeneration.from_pretrained(gemma_dir, local_files_only=True, dtype=torch.float32)
    saved = tmp_path / "saved"
    hf.save_pretrained(saved)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(gemma_dir / name, saved / name)
    assert torch.equal(hidden_states(load_gemma(saved, dtype=torch.float32, max_length=LENGTH)), base)


def test_factory_gemma_is_deterministic(gemma_dir, tmp_path):
    from safetensors.torch import load_file
    again = load_file(write_gemma(tmp_path / "again", "tiny", seed=1) / "model.safetensors")
    other = load_file(write_gemma(tmp_path / "other", "tiny", seed=2) / "model.safetensors")
    first = load_file(gemma_dir / "model.safetensors")
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    assert any(k.startswith("vision_tower.vision_model.") for k in first)  # the official layout
    assert any(k.startswith("language_model.model.layers.") for k in first)
    assert not torch.equal(first["language_model.model.embed_tokens.weight"],
                           other["language_model.model.embed_tokens.weight"])


def test_register_replacement_per_sample():
    x = torch.arange(2 * 8, dtype=torch.float32).view(2, 8, 1).expand(2, 8, 3).contiguous()
    valid = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    registers = -torch.arange(1, 5, dtype=torch.float32).view(4, 1).expand(4, 3)
    out = compact_with_registers(x, valid, registers)[..., 0]
    assert out[0].tolist() == [5, 6, 7, -4, -1, -2, -3, -4]  # valid tokens first; register i mod 4 after
    assert out[1].tolist() == [15, -2, -3, -4, -1, -2, -3, -4]
    with pytest.raises(ValueError, match="multiple of the connector's 3 registers"):
        compact_with_registers(x, valid, registers[:3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sliced_normalisation_is_exact(dtype):
    """Slices of tokens give the whole tensor's result: any slicing in float32; in bf16, slices of a
    multiple of 32 tokens (CPU bf16 rsqrt rounds differently in a vector loop's scalar tail)."""
    gen = torch.Generator().manual_seed(0)
    encoded = (torch.randn(2, 96, 8, 3, generator=gen) * 3).to(dtype)
    valid = torch.zeros(2, 96, dtype=torch.bool)
    valid[0, 5:], valid[1, 95:] = True, True
    for fn in (masked_range_norm, token_rms_norm):
        whole = fn(encoded, valid, chunk=96)
        assert whole.dtype == dtype and whole.shape == (2, 96, 24)
        assert (whole[0, :5] == 0).all() and (whole[1, :95] == 0).all() and (whole[1, 95] != 0).any()
        for chunk in (32, 64) if dtype == torch.bfloat16 else (1, 7, 32, 64):
            assert torch.equal(fn(encoded, valid, chunk=chunk), whole)


def test_text_encoding_indexing():
    enc = TextEncoding(torch.zeros(3, 4, 2), torch.ones(3, 4, 1))
    assert len(enc) == 3 and enc[1].video.shape == (1, 4, 2) and enc[1:].audio.shape == (2, 4, 1)
    assert TextEncoding(torch.zeros(2, 4, 2), None)[0].audio is None
