"""The reference's text path (ltx-core 1.0.0) on the factory's tiny Gemma and checkpoint.

Both halves are loaded by the reference's own builder and key operations (``GEMMA_LLM_KEY_OPS``,
``EMBEDDINGS_PROCESSOR_KEY_OPS``), so our files are read as the reference reads official ones.
Test-harness patches, not behaviour (reference notes 2.4, 4.1 and 5): the reference's configurators
hard-code Gemma 3 12B, its 3840 x 49 projection and 128 registers, so tiny configurators swap in
the tiny sizes; and its Gemma module op no longer runs on transformers 5, so a stand-in computes the
non-persistent buffers (rotary frequencies, embedding scale, vision positions) with transformers'
own code, as that op does.
"""

from pathlib import Path

import torch
from torch import nn

from tests.parity.reference import require_reference


def _no_meta(model: nn.Module) -> nn.Module:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert not left, f"reference model left on meta: {left[:5]}"
    return model.eval().requires_grad_(False)


def reference_gemma(gemma_dir: Path, dtype: torch.dtype, max_length: int):
    """The reference's GemmaTextEncoder (Gemma3ForConditionalGeneration + LTXVGemmaTokenizer)."""
    require_reference()
    from ltx_core.loader.module_ops import ModuleOps
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.text_encoders.gemma import GEMMA_LLM_KEY_OPS, GemmaTextEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    class TinyGemmaConfigurator:
        @classmethod
        def from_config(cls, config):
            return GemmaTextEncoder(model=Gemma3ForConditionalGeneration(Gemma3Config.from_pretrained(gemma_dir)))

    def buffers(module):
        model = module.model.model
        lm = model.language_model
        lm.rotary_emb = type(lm.rotary_emb)(lm.config)
        lm.embed_tokens.register_buffer("embed_scale", torch.tensor(lm.config.hidden_size**0.5), persistent=False)
        emb = getattr(model.vision_tower, "vision_model", model.vision_tower).embeddings
        emb.register_buffer("position_ids", torch.arange(emb.num_positions)[None], persistent=False)
        return module

    sd_ops = GEMMA_LLM_KEY_OPS
    with torch.device("meta"):
        folded = not hasattr(TinyGemmaConfigurator.from_config({}).model.model.vision_tower, "vision_model")
    if folded:  # transformers >= 5 folds SigLIP's ``vision_model`` level away; the files keep it
        sd_ops = sd_ops.with_replacement("vision_tower.vision_model.", "vision_tower.")
    shards = tuple(str(p) for p in sorted(Path(gemma_dir).glob("*.safetensors")))
    encoder = SingleGPUModelBuilder(
        model_class_configurator=TinyGemmaConfigurator, model_path=shards, model_sd_ops=sd_ops,
        module_ops=(ModuleOps("TinyGemmaBuffers", lambda m: isinstance(m, GemmaTextEncoder), buffers),),
    ).build(device=torch.device("cpu"), dtype=dtype)
    encoder.tokenizer = LTXVGemmaTokenizer(str(gemma_dir), max_length)
    _no_meta(encoder.model)
    return encoder


def reference_processor(checkpoint: Path, gemma, dtype: torch.dtype):
    """The reference's EmbeddingsProcessor (feature extractor V1/V2 + both connectors) from ``checkpoint``,
    for a Gemma of geometry ``gemma`` (a fastltx GemmaGeometry)."""
    require_reference()
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.text_encoders.gemma import EMBEDDINGS_PROCESSOR_KEY_OPS, EmbeddingsProcessorConfigurator
    from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1

    feature_width = gemma.feature_width

    class TinyProcessorConfigurator:
        @classmethod
        def from_config(cls, config):
            processor = EmbeddingsProcessorConfigurator.from_config(config)  # V1/V2 choice, connector geometry
            registers = config["transformer"]["connector_num_learnable_registers"]
            for c in (processor.video_connector, processor.audio_connector):
                c.num_learnable_registers = registers
                c.learnable_registers = nn.Parameter(torch.empty(registers, c.inner_dim))
            fe = processor.feature_extractor
            if isinstance(fe, FeatureExtractorV1):  # 12B: 3840 x 49 -> 3840
                fe.aggregate_embed = nn.Linear(feature_width, processor.video_connector.inner_dim, bias=False)
            else:  # output widths already from the header; input width and Gemma's hidden size are 12B's
                fe.embedding_dim = gemma.hidden
                for name in ("video_aggregate_embed", "audio_aggregate_embed"):
                    old = getattr(fe, name)
                    setattr(fe, name, nn.Linear(feature_width, old.out_features, bias=old.bias is not None))
            return processor

    processor = SingleGPUModelBuilder(model_class_configurator=TinyProcessorConfigurator, model_path=str(checkpoint),
                                      model_sd_ops=EMBEDDINGS_PROCESSOR_KEY_OPS).build(device=torch.device("cpu"),
                                                                                       dtype=dtype)
    return _no_meta(processor)
