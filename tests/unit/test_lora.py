"""LoRA fusion: the fused weights are W + sum s_i B_i A_i; bad LoRA files are clear errors."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fastltx.checkpoint import CheckpointError
from fastltx.checkpoint.factory import make_checkpoint, make_lora
from fastltx.models.transformer import load_transformer

KEY = "transformer_blocks.1.attn1.to_q.weight"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    return (make_checkpoint(root / "m.safetensors", "v1", seed=1, parts=("transformer",)),
            make_lora(root / "a.safetensors", "v1", seed=2, rank=4), make_lora(root / "b.safetensors", "v1", seed=3))


def tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_weights(files, dtype):
    model_path, a, b = files
    fused = load_transformer(model_path, dtype=dtype, loras=[(a, 0.5), (b, -1.25)]).state_dict()
    plain = load_transformer(model_path, dtype=dtype).state_dict()
    la, lb = tensors(a), tensors(b)
    pre = f"diffusion_model.{KEY[:-len('.weight')]}"

    def delta(t, s):
        return s * t[pre + ".lora_B.weight"].double() @ t[pre + ".lora_A.weight"].double()
    want = tensors(model_path)["model.diffusion_model." + KEY].double() + delta(la, 0.5) + delta(lb, -1.25)
    assert torch.allclose(fused[KEY].double(), want, rtol=0, atol=1e-6 if dtype == torch.float32 else 2e-2)
    assert fused[KEY].dtype == dtype
    # weights no LoRA touches (biases, norms, tables) are unchanged
    bias = KEY.replace(".weight", ".bias")
    assert torch.equal(fused[bias], plain[bias]) and torch.equal(fused["scale_shift_table"], plain["scale_shift_table"])
    assert not torch.equal(fused[KEY], plain[KEY])


def test_strength_zero_is_the_plain_model(files):
    model_path, a, _ = files
    assert torch.equal(load_transformer(model_path, dtype=torch.float32, loras=[(a, 0.0)]).state_dict()[KEY],
                       load_transformer(model_path, dtype=torch.float32).state_dict()[KEY])


def _write(tmp_path, tensors):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("bad,message", [
    ({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 32)}, "without their A/B partner"),
    ({"transformer_blocks.0.attn1.to_q.lora_down.weight": torch.zeros(2, 32)}, "not an LTX-2 LoRA"),
    ({"diffusion_model.transformer_blocks.9.attn1.to_q.lora_A.weight": torch.zeros(2, 32),
      "diffusion_model.transformer_blocks.9.attn1.to_q.lora_B.weight": torch.zeros(32, 2)}, "does not have"),
    ({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 31),
      "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 2)}, "does not match"),
    ({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 32),
      "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 3)}, "low-rank product"),
])
def test_bad_lora_files(files, tmp_path, bad, message):
    path = _write(tmp_path, bad)
    with pytest.raises(CheckpointError, match=message) as info:
        load_transformer(files[0], dtype=torch.float32, loras=[(path, 1.0)])
    assert str(path) in str(info.value)
