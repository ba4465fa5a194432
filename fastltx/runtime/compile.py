"""torch.compile for the transformer: one compiled block function shared by every block.

All blocks run the same code on same-shaped tensors, and the per-block perturbation plan is an
argument, so Dynamo produces one graph for all 48 blocks (one more per distinct plan shape, e.g. a
batch where some samples skip a block's self-attention; with sequence-parallel riders, one for the
first block, which finishes no earlier block's audio, and one for ``AVBlock.finish_pending``).
A block's text keys and values (``AVBlock.text_keys_values``, once a generation for the text
cache) are one more graph, shared by the blocks too.
"""

import functools

import torch

from fastltx.models.transformer.block import AVBlock


RECOMPILE_LIMIT = 64  # at least this many compiled variants of the block function (Dynamo's limit)
# The block methods routed through compiled functions. ``text_keys_values`` (once a generation, the
# text cache) for the host's launches at a graphed first step: the 48 blocks' caches compiled as one
# function shortened it by 4-6 ms on 2 and 4 H200s but took ~19 s to compile (CPU, tiny model); one
# function shared by the blocks compiles in ~1 s and kept ~3/4 of the host saving on the CPU (not
# measured on the GPU; docs/benchmarks-multi-gpu-2.md, sixteenth session).
COMPILED_METHODS = ("forward", "finish_pending", "text_keys_values")


@functools.cache
def _compiled_block_method(name: str, mode: str | None, dynamic: bool | None, tune: bool):
    fn = getattr(AVBlock, name)
    if tune:  # Inductor benchmarks block sizes of its own kernels (norms, modulation, quantisation)
        return torch.compile(fn, dynamic=dynamic, options={"coordinate_descent_tuning": True})
    return torch.compile(fn, mode=mode, dynamic=dynamic)


def compile_blocks(model: torch.nn.Module, mode: str | None = None, dynamic: bool | None = False,
                   tune: bool = False) -> None:
    """Route every transformer block through one compiled forward (compiled lazily, at the first call).

    ``dynamic=False`` specialises on shapes (a new token count compiles once more); pass None to let
    Dynamo generalise after the first recompile. ``tune``: Inductor's coordinate-descent tuning of
    its generated kernels (a longer first call; not together with ``mode``).
    """
    if tune and mode is not None:
        raise ValueError("compile_blocks: tune and mode are exclusive")
    # The shared function compiles once per token count and process group (and per form of the
    # collectives, see fastltx.runtime.distributed.functional_collectives): a session of a few
    # sizes passes Dynamo's default limit of 8 and would run the blocks eagerly from there on.
    for knob in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), RECOMPILE_LIMIT))
    # the blocks' forward, the audio work a sequence-parallel forward leaves after the last block
    # (AVBlock.finish_pending; inside the blocks it is part of the next block's compiled forward), and
    # each block's text keys and values (``LTXTransformer.cache_text``)
    for name in COMPILED_METHODS:
        fn = _compiled_block_method(name, mode, dynamic, tune)
        for block in model.transformer_blocks:
            setattr(block, name, functools.partial(fn, block))


def blocks_compiled(model) -> bool:
    """Whether ``compile_blocks`` routed the model's blocks through the compiled forward."""
    blocks = getattr(model, "transformer_blocks", None)
    return bool(blocks) and "forward" in blocks[0].__dict__


def uncompile_blocks(model: torch.nn.Module) -> None:
    for block in model.transformer_blocks:
        for name in COMPILED_METHODS:
            block.__dict__.pop(name, None)
