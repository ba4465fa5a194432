"""The tiny-model factory is deterministic and official in layout; the CLI reports and errors cleanly."""

import json

import pytest
import torch
from safetensors import safe_open

from fastltx.checkpoint.factory import make_checkpoint, transformer_config
from fastltx.checkpoint.safetensors_file import read_header
from fastltx.cli import main
from fastltx.models.transformer import TransformerConfig


def tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = make_checkpoint(tmp_path / "a.safetensors", "v1", seed=7)
    b = make_checkpoint(tmp_path / "b.safetensors", "v1", seed=7)
    c = make_checkpoint(tmp_path / "c.safetensors", "v1", seed=8)
    ta, tb, tc = tensors(a), tensors(b), tensors(c)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert read_header(a).metadata == read_header(b).metadata
    assert ta.keys() == tc.keys() and not torch.equal(ta["model.diffusion_model.proj_out.weight"],
                                                      tc["model.diffusion_model.proj_out.weight"])
    assert {t.dtype for t in ta.values()} == {torch.bfloat16}


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_round_trips_to_the_same_config(tmp_path, version):
    path = make_checkpoint(tmp_path / "m.safetensors", version, num_layers=3)
    header = read_header(path)
    cfg = TransformerConfig.from_checkpoint_config(header.config(), str(path))
    assert cfg == transformer_config(version, num_layers=3)
    assert cfg.version == version.upper()
    assert header.metadata["model_version"] == {"v1": "2.0.0", "v2": "2.3.0"}[version]


def test_official_key_names(tmp_path):
    v1 = read_header(make_checkpoint(tmp_path / "v1.safetensors", "v1")).tensors
    v2 = read_header(make_checkpoint(tmp_path / "v2.safetensors", "v2")).tensors
    p = "model.diffusion_model."
    for key in ["adaln_single.emb.timestep_embedder.linear_1.weight", "caption_projection.linear_2.bias",
                "transformer_blocks.1.audio_to_video_attn.k_norm.weight", "av_ca_a2v_gate_adaln_single.linear.weight",
                "transformer_blocks.0.scale_shift_table_a2v_ca_video", "transformer_blocks.0.ff.net.0.proj.weight",
                "audio_scale_shift_table", "transformer_blocks.0.attn2.to_out.0.weight"]:
        assert p + key in v1, key
    assert v1[p + "transformer_blocks.0.scale_shift_table"].shape == (6, 32)
    assert v2[p + "transformer_blocks.0.scale_shift_table"].shape == (9, 32)
    for key in ["prompt_adaln_single.linear.weight", "transformer_blocks.0.attn1.to_gate_logits.weight",
                "transformer_blocks.0.audio_prompt_scale_shift_table"]:
        assert p + key in v2 and p + key not in v1, key
    assert p + "caption_projection.linear_1.weight" not in v2


def test_19b_geometry_on_meta():
    """The full-size configuration has the published parameter count (18.876 B, reference notes 1.0)."""
    from fastltx.models.transformer import LTXTransformer
    with torch.device("meta"):
        model = LTXTransformer(transformer_config("v1", "19b"))
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e9, 3) == 18.876, n


def test_cli_tiny_and_inspect(tmp_path, capsys):
    path = tmp_path / "tiny.safetensors"
    assert main(["tiny", str(path), "--version", "v2", "--layers", "3"]) == 0
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2.3.0: LTX-2.3 (V2 numerics), audio-video, 3 blocks" in out
    row = next(line for line in out.splitlines() if line.startswith("transformer"))
    from fastltx.checkpoint.inspect import component_of  # the file holds the other components too
    own = [t for k, t in tensors(path).items() if component_of(k) == "transformer"]
    n = sum(t.numel() for t in own)
    assert row.split()[1] == str(len(own)) and f"{n / 1e3:.3f} K" in row and row.endswith("bf16")


def test_cli_error_is_one_line_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("hello")
    assert main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fastltx: error: {bad}: not a safetensors file (only 5 bytes)"


def test_inspect_lists_other_components(tmp_path):
    from fastltx.checkpoint.factory import write_checkpoint
    from fastltx.checkpoint.inspect import inspect_checkpoint
    path = write_checkpoint(tmp_path / "x.safetensors", {
        "vae.decoder.conv_in.conv.weight": torch.zeros(4, 2, 3, 3, 3, dtype=torch.bfloat16),
        "vocoder.conv_pre.weight": torch.zeros(8, 128, 7),
        "diffusion_model.blocks.0.lora_A.weight": torch.zeros(2, 4)}, {"vae": {}})
    report = inspect_checkpoint(path)
    assert "video VAE decoder" in report and "vocoder" in report and "LoRA" in report
    assert "unknown (no model_version" in report
    assert json.loads(read_header(path).metadata["config"]) == {"vae": {}}
