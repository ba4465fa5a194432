"""How much GPU memory a transformer forward needs beyond its weights (for the memory plan).

Measured anchor (docs/benchmarks.md, H100, 19B geometry, 6,144 video tokens, batch 1): an eager
forward peaks ~13 activation-sized buffers (batch x tokens x width) above the weights: the
residual, its normalised copy, q/k/v, RoPE tables, the 4x feed-forward hidden and its GELU. fp8
adds the quantised copies. The text keys/values cached for a generation (LTX-2 only) stay for the
whole stage: two per block and stream.

Split over several GPUs (sequence parallelism), each rank plans the forward of the whole sequence:
the plan does not know the split. A rank holds less: its shard's activations, plus what its
self-attention exchange receives. With "push" that is every token's keys and values in symmetric
memory, kept for the process's life (``exchange_bytes``): a new buffer each time an exchange is
larger than the buffers held, so stage 1's stays beside stage 2's. tests/unit/test_memory_plan.py
checks, by these estimates, that the whole sequence's covers both on 2 to 6 ranks, for the 19B
geometry at the benchmarked sizes.
"""

import torch

from fastltx.models.transformer.config import TransformerConfig

ACTIVATIONS_LIVE = 14  # activation-sized buffers alive at the peak of a block (13 measured, rounded up)
# cuBLAS / cuDNN workspaces and allocator slack (256 MiB), and the float32 temporaries of one fp8
# quantisation block (fastltx.layers.linear.QUANT_CHUNK elements: abs, float, quotient; 384 MiB), or,
# with fp8 weights only, one dequantised weight (fastltx.layers.linear.WEIGHT_CHUNK: 128 MiB in bf16)
WORKSPACE = 640 * 2**20


def forward_bytes(cfg: TransformerConfig, video_tokens: int, audio_tokens: int, text_tokens: int, batch: int,
                  dtype: torch.dtype = torch.bfloat16, workspace: int = WORKSPACE) -> int:
    """Estimated peak bytes above the weights while denoising with ``batch`` samples per forward
    (the guidance passes of a step batched), text keys/values cached for the stage included."""
    size = torch.empty((), dtype=dtype).element_size()
    width = 0
    cache = 0
    if cfg.video is not None:
        width += video_tokens * cfg.video.dim
        cache += text_tokens * cfg.video.dim
    if cfg.audio is not None:
        width += audio_tokens * cfg.audio.dim
        cache += text_tokens * cfg.audio.dim
    cached_text = 0 if cfg.cross_attention_adaln else 2 * cache * cfg.num_layers
    return batch * (width * ACTIVATIONS_LIVE + cached_text) * size + workspace


def exchange_bytes(cfg: TransformerConfig, video_tokens: int, ranks: int, batch: int,
                   dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of one rank's buffer for the keys and values of ``video_tokens`` (padded to a multiple of
    ``ranks``) that the "keys" and "push" exchanges gather (fastltx/runtime/push.py keeps "push"'s)."""
    size = torch.empty((), dtype=dtype).element_size()
    padded = -(-video_tokens // ranks) * ranks
    return 2 * batch * padded * cfg.video.dim * size
