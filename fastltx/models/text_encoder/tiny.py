"""What the tiny-model factory writes for the text path.

* ``write_gemma``: a random Gemma 3 directory as Hugging Face publishes ``gemma-3-12b-it``:
  ``config.json`` (model_type "gemma3" with text and vision configs), safetensors weights in the
  official key layout (``language_model.model.*``, ``vision_tower.*``, ``multi_modal_projector.*``;
  the tied lm_head is not stored), and a small character-level tokenizer that ``AutoTokenizer``
  loads offline (``tokenizer.json`` + ``tokenizer_config.json``, Gemma's special tokens and ids).
* ``text_projection_part`` / ``text_connectors_part``: the single-file checkpoint's
  ``text_embedding_projection.*`` and ``model.diffusion_model.{video,audio}_embeddings_connector.*``
  tensors, sized for the Gemma model of the same size (the projection takes hidden x (layers + 1)).
* ``connector_keys``: the connector section of the transformer header for a version and size.

Sizes follow the factory's: "tiny", and "19b" whose text encoder is Gemma 3 12B. The factory
registers these parts, so it is imported lazily here.
"""

import json
import os
import string
from pathlib import Path

import torch
from safetensors.torch import save_file

from fastltx.models.text_encoder.config import GemmaGeometry, TextConfig
from fastltx.models.text_encoder.processor import (AUDIO_CONNECTOR_PREFIX, PROJECTION_PREFIX,
                                                   VIDEO_CONNECTOR_PREFIX, TextProcessor)

_TEXT_COMMON = dict(model_type="gemma3_text", attention_bias=False, attention_dropout=0.0, attn_logit_softcapping=None,
                    final_logit_softcapping=None, hidden_activation="gelu_pytorch_tanh", initializer_range=0.02,
                    rms_norm_eps=1e-6, rope_scaling={"factor": 8.0, "rope_type": "linear"}, rope_theta=1000000.0,
                    rope_local_base_freq=10000.0, max_position_embeddings=131072, use_cache=True,
                    pad_token_id=0, eos_token_id=1, bos_token_id=2)
_VISION_COMMON = dict(model_type="siglip_vision_model", attention_dropout=0.0, hidden_act="gelu_pytorch_tanh",
                      layer_norm_eps=1e-6, num_channels=3, patch_size=14, vision_use_head=False)
# Gemma 3 12B (the LTX-2 text encoder) and a tiny stand-in with sliding and full attention layers.
GEMMA_CONFIGS = {
    "19b": dict(
        text_config=dict(_TEXT_COMMON, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
                         sliding_window=1024, sliding_window_pattern=6, vocab_size=262208),
        vision_config=dict(_VISION_COMMON, hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                           num_attention_heads=16, image_size=896),
        mm_tokens_per_image=256, boi_token_index=255999, eoi_token_index=256000, image_token_index=262144,
        eos_token_id=[1, 106]),
    "tiny": dict(
        text_config=dict(_TEXT_COMMON, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                         sliding_window=4, sliding_window_pattern=2, vocab_size=40),
        vision_config=dict(_VISION_COMMON, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28),
        mm_tokens_per_image=4, boi_token_index=37, eoi_token_index=38, image_token_index=39, eos_token_id=[1]),
}
# Official (transformers 4.5x) names of the multimodal model's parts, from transformers 5's module names.
_OFFICIAL_PREFIXES = (("model.language_model.", "language_model.model."), ("model.vision_tower.", "vision_tower."),
                      ("model.multi_modal_projector.", "multi_modal_projector."))
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # ids 0-4, as in Gemma's vocabulary


def gemma_config(size: str = "tiny") -> dict:
    """The ``config.json`` of the Gemma 3 model paired with a factory size."""
    if size not in GEMMA_CONFIGS:
        raise ValueError(f"size must be one of {tuple(GEMMA_CONFIGS)}, got {size!r}")
    return dict(GEMMA_CONFIGS[size], architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3",
                initializer_range=0.02, torch_dtype="bfloat16")


def gemma_geometry(size: str = "tiny") -> GemmaGeometry:
    t = gemma_config(size)["text_config"]
    return GemmaGeometry(t["hidden_size"], t["num_hidden_layers"])


def write_tokenizer(path: str | os.PathLike) -> Path:
    """A character-level tokenizer with Gemma's special tokens: BOS added in front, no EOS."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate([*SPECIAL_TOKENS, "▁", *string.ascii_lowercase, ".", ","])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Replace("▁", " ")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", vocab["<bos>"])])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.save(str(path / "tokenizer.json"))
    special = dict(pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>", mask_token="<mask>")
    (path / "tokenizer_config.json").write_text(json.dumps(
        dict(special, tokenizer_class="GemmaTokenizer", add_bos_token=True, add_eos_token=False), indent=1))
    (path / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    return path


def official_key(name: str) -> str | None:
    """transformers 5 state-dict name -> the official Gemma 3 file name (None: not stored)."""
    for ours, official in _OFFICIAL_PREFIXES:
        if name.startswith(ours):
            rest = name[len(ours):]
            if official == "vision_tower.":  # SigLIP's own ``vision_model`` level, which transformers 5 folds away
                rest = "vision_model." + rest.removeprefix("vision_model.")
            return official + rest
    return None  # lm_head: tied to the embedding, absent from the official files


def write_gemma(path: str | os.PathLike, size: str = "tiny", seed: int = 0, shards: int = 1) -> Path:
    """A random Gemma 3 directory (config, weights in ``shards`` files, tokenizer), deterministic."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from fastltx.checkpoint.factory import random_state
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = gemma_config(size)
    with torch.device("meta"):
        model = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(config))
    state = {official_key(k): t for k, t in random_state(model, seed).items() if official_key(k)}
    names = sorted(state)
    groups = [names[i::shards] for i in range(shards)]
    files = ["model.safetensors"] if shards == 1 else [f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
                                                      for i in range(shards)]
    for file, group in zip(files, groups):
        save_file({k: state[k].contiguous() for k in group}, str(path / file), metadata={"format": "pt"})
    if shards > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": {k: f for f, group in zip(files, groups) for k in group}}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    (path / "config.json").write_text(json.dumps(config, indent=1))
    write_tokenizer(path)
    return path


def connector_keys(version: str, size: str) -> dict:
    """The connector keys of the transformer header. LTX-2 connectors are 30 x 128 wide (3840, the
    caption width); LTX-2.3 ones run at the transformer's video and audio widths with gated
    attention (inferred from the 1.0.0 reference's V2 code path; no 2.3 header was available)."""
    from fastltx.checkpoint.factory import SIZES
    geometry, keys = SIZES[size]
    keys = dict(keys)
    if version == "v2":
        (vh, vd), (ah, ad) = geometry["video"], geometry["audio"]
        keys.update(connector_num_attention_heads=vh, connector_attention_head_dim=vd,
                    audio_connector_num_attention_heads=ah, audio_connector_attention_head_dim=ad,
                    connector_apply_gated_attention=True)
    return keys


def text_config(version: str, size: str) -> TextConfig:
    from fastltx.checkpoint.factory import transformer_config
    section = transformer_config(version, size).to_checkpoint_section(connector_keys(version, size))
    return TextConfig.from_checkpoint_config({"transformer": section}, "<factory>", gemma_geometry(size))


def _meta_processor(version: str, size: str) -> TextProcessor:
    with torch.device("meta"):
        return TextProcessor(text_config(version, size))


def text_projection_part(version: str, size: str):
    from fastltx.checkpoint.factory import Part
    return Part({}, {PROJECTION_PREFIX: _meta_processor(version, size).feature_extractor})


def _registers_at_unit_scale(key: str, t: torch.Tensor) -> torch.Tensor:
    """Registers as large as the features they stand beside (the reference draws them in [-1, 1])."""
    return (t.float() * 10).to(t.dtype) if key.endswith("learnable_registers") else t


def text_connectors_part(version: str, size: str):
    from fastltx.checkpoint.factory import Part
    processor = _meta_processor(version, size)
    modules = {VIDEO_CONNECTOR_PREFIX: processor.video_connector, AUDIO_CONNECTOR_PREFIX: processor.audio_connector}
    return Part({}, modules, _registers_at_unit_scale)
