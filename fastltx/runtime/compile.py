"""torch.compile for the transformer: one compiled block function shared by every block.

All blocks run the same code on same-shaped tensors, and the per-block perturbation plan is an
argument, so Dynamo produces one graph for all 48 blocks (one more per distinct plan shape, e.g. a
batch where some samples skip a block's self-attention; with sequence-parallel riders, one for the
first block, which finishes no earlier block's audio, and one for ``AVBlock.finish_pending``).
The text keys and values of every block (``LTXTransformer.cache_text``, once a generation) are one
more graph.
"""

import functools

import torch

from fastltx.models.transformer.block import AVBlock


RECOMPILE_LIMIT = 64  # at least this many compiled variants of the block function (Dynamo's limit)


def _compile(fn, mode: str | None, dynamic: bool | None, tune: bool):
    if tune:  # Inductor benchmarks block sizes of its own kernels (norms, modulation, quantisation)
        return torch.compile(fn, dynamic=dynamic, options={"coordinate_descent_tuning": True})
    return torch.compile(fn, mode=mode, dynamic=dynamic)


@functools.cache
def _compiled_block_method(name: str, mode: str | None, dynamic: bool | None, tune: bool):
    return _compile(getattr(AVBlock, name), mode, dynamic, tune)


@functools.cache
def _compiled_text_cache(mode: str | None, dynamic: bool | None, tune: bool):
    """Every block's text keys and values as one compiled function of (model, contexts..., batch)
    (the model an argument, not bound: no reference cycle through the model's own dict)."""
    def text_cache(model, *args):
        return model._text_keys_values(*args)
    return _compile(text_cache, mode, dynamic, tune)


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
    # the blocks' forward, and the audio work a sequence-parallel forward leaves after the last block
    # (AVBlock.finish_pending; inside the blocks it is part of the next block's compiled forward)
    for name in ("forward", "finish_pending"):
        fn = _compiled_block_method(name, mode, dynamic, tune)
        for block in model.transformer_blocks:
            setattr(block, name, functools.partial(fn, block))
    if hasattr(model, "_text_keys_values"):  # the text cache (``LTXTransformer.cache_text``): one graph
        model.__dict__["compiled_text_cache"] = _compiled_text_cache(mode, dynamic, tune)


def blocks_compiled(model) -> bool:
    """Whether ``compile_blocks`` routed the model's blocks through the compiled forward."""
    blocks = getattr(model, "transformer_blocks", None)
    return bool(blocks) and "forward" in blocks[0].__dict__


def uncompile_blocks(model: torch.nn.Module) -> None:
    for block in model.transformer_blocks:
        block.__dict__.pop("forward", None)
        block.__dict__.pop("finish_pending", None)
    model.__dict__.pop("compiled_text_cache", None)
