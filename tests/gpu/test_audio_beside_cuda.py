"""The audio's work on a side CUDA stream (``audio_beside``, AVBlock.forward_beside) against the
same model on one stream: eager, compiled (the parts against the whole block) and through CUDA
graphs (the side stream recorded with the capture), float32 and bf16 (skipped without CUDA)."""

import pytest
import torch

from fastltx.checkpoint.factory import random_transformer, transformer_config
from tests.helpers import modality_on
from tests.parity.test_transformer import inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("compiled", [False, True])
def test_audio_beside_equals_one_stream(dtype, compiled):
    import torch._dynamo as dynamo
    from fastltx.runtime.compile import compile_blocks
    model = random_transformer(transformer_config("v1", num_layers=3), seed=6, device="cuda", dtype=dtype)
    model.fuse_projections()
    calls = [tuple(modality_on(m, "cuda") for m in inputs(model, dtype, **kw))
             for kw in (dict(sigmas=(0.8,), seed=1), dict(sigmas=(0.8,), seed=2), dict(sigmas=(0.5, 0.3)))]
    dynamo.reset()
    if compiled:
        compile_blocks(model)
    bound = 0.0 if not compiled else (1e-5 if dtype == torch.float32 else 2e-2)
    with torch.no_grad():
        caches = [model.cache_text(v, a) for v, a in calls]
        model.audio_beside = False
        want = [model(v, a, None, c) for (v, a), c in zip(calls, caches)]
        model.audio_beside = True
        got = [model(v, a, None, c) for (v, a), c in zip(calls, caches)]
        model.graph_blocks()
        graphed = [model(v, a, None, c) for _ in range(3) for (v, a), c in zip(calls, caches)]  # records, replays
    torch.cuda.synchronize()
    for i, g in enumerate(got + graphed):
        w = want[i % len(calls)]
        for x, y in zip(g, w):
            err = ((x.float() - y.float()).norm() / y.float().norm()).item()
            assert err <= bound, (i, err)
    dynamo.reset()
