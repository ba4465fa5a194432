"""The whole text path: prompts -> Gemma 3 hidden states -> features -> video and audio contexts.

Unlike the reference, which runs one prompt at a time, a list of prompts is encoded as one batch
(each padded to the same fixed length, so every result equals the prompt's own); a guidance
step's positive and negative prompts go through Gemma together.
"""

import os
from collections.abc import Sequence

import torch
from torch import nn

from fastltx.models.text_encoder.gemma import MAX_LENGTH, GemmaEncoder, load_gemma, read_gemma_directory
from fastltx.models.text_encoder.processor import TextEncoding, TextProcessor, load_text_processor


class TextEncoder(nn.Module):
    def __init__(self, gemma: GemmaEncoder, processor: TextProcessor):
        super().__init__()
        self.gemma = gemma
        self.processor = processor

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str]) -> TextEncoding:
        """Contexts for a batch of prompts: ``encode([positive, negative])`` for a guided step."""
        ids, mask = self.gemma.tokenize(list(prompts))
        return self.processor(self.gemma(ids, mask), mask)


HIDDEN_COPIES = 4  # all hidden states: the per-layer list, their stack, a normalised temporary, the flat features
# cuBLAS workspace and allocator slack; with fp8 weights also one dequantised weight (Gemma 3 12B's
# largest linear: 15,360 x 3,840, 113 MiB in bf16; fastltx.layers.linear.WEIGHT_CHUNK)
WORKSPACE = 256 * 2**20


def encode_bytes(hidden: int, layers: int, intermediate: int, prompts: int, max_length: int = MAX_LENGTH,
                 dtype: torch.dtype = torch.bfloat16, workspace: int = WORKSPACE) -> int:
    """Estimated peak bytes above the weights to encode ``prompts`` prompts: every hidden state is
    kept (the features use all of them), plus one layer's feed-forward temporaries."""
    size = torch.empty((), dtype=dtype).element_size()
    tokens = prompts * max_length
    return tokens * (hidden * (layers + 1) * HIDDEN_COPIES + 3 * intermediate) * size + workspace


def to_fp8_weights(module: nn.Module) -> int:
    """Store the linears of a part of the text path (a Gemma decoder layer, the processor) in fp8,
    weight only (``Fp8WeightLinear``): the text encoder's form under a memory budget. Its compute is
    small next to copying its weights onto the device on each call, so it holds and copies half the
    bytes while its activations stay in the run dtype. Returns how many linears were converted."""
    from fastltx.layers.linear import to_fp8
    # all but the per-head attention gates of the connectors (tiny, and sensitive: as in the transformer)
    return to_fp8(module, lambda name, linear: "to_gate_logits" not in name, weight_only=True)


def convert_to_fp8(encoder: TextEncoder, device: torch.device | str) -> None:
    """``to_fp8_weights`` on every Gemma layer and the processor of an encoder held in host memory,
    each part converted on ``device`` (fast) and put back: the device holds one part at a time."""
    home = torch.device("cpu")
    for part in [*encoder.gemma.layers, encoder.processor]:
        to_fp8_weights(part.to(device))
        part.to(home)
    encoder._fastltx_fp8 = True


def load_text_encoder(gemma_path: str | os.PathLike, checkpoint: str | os.PathLike,
                      device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.bfloat16,
                      max_length: int = MAX_LENGTH) -> TextEncoder:
    """Gemma 3 from a local Hugging Face directory plus the projection and connectors of an official
    checkpoint. The directory is checked, then the checkpoint's projection against the Gemma model,
    before any weight is read."""
    directory = read_gemma_directory(gemma_path)  # config, tokenizer and weight files present
    processor = load_text_processor(checkpoint, directory.geometry, device, dtype)
    gemma = load_gemma(gemma_path, device, dtype, max_length, directory=directory)
    return TextEncoder(gemma, processor)
