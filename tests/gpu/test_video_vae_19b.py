"""The full-size LTX-2 19B video decoder on the GPU against ltx-core on the same random bf16 weights.

17 frames at 256x384 (latent 3 x 8 x 12), timestep-conditioned decode with the same generator:
one pass (plain and channels-last weights), streamed one latent frame at a time, and the
reference's tiling. Bound: relative L2 error 2e-2 (bf16 with different convolution algorithms);
a real porting error (the pixel unpatchify's height and width offsets swapped) is far outside it.
"""

import pytest
import torch

from tests.parity.reference import require_reference

pytestmark = [pytest.mark.gpu, pytest.mark.parity,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
BOUND = 2e-2


def rel_l2(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_19b_decoder_matches_reference(monkeypatch):
    require_reference()
    import fastltx.models.video_vae.decoder as decoder_module
    from bench.video_vae import random_decoder, reference_decoder_on_weights
    from fastltx.layers.conv import to_channels_last
    from fastltx.models.video_vae import SpatialTiling, TemporalTiling, Tiling
    from fastltx.models.video_vae.decode import tiled_decode
    from tests.parity.reference_video_vae import reference_tiling

    ours = random_decoder("v1", "19b", device="cuda")
    ref = reference_decoder_on_weights("v1", "19b", ours)
    fast = to_channels_last(random_decoder("v1", "19b", device="cuda"))
    latent = torch.randn(1, 128, 3, 8, 12, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    tiling = Tiling(SpatialTiling(128, 64), TemporalTiling(16, 8))

    def g():
        return torch.Generator("cuda").manual_seed(1)

    with torch.inference_mode():
        expected = ref(latent.bfloat16(), generator=g())
        errors = {"one pass": rel_l2(ours(latent.bfloat16(), generator=g()), expected),
                  "channels-last": rel_l2(fast(latent.bfloat16(), generator=g()), expected),
                  "streamed": rel_l2(torch.cat(list(fast.decode_chunks(latent.bfloat16(), 1, generator=g())), 2),
                                     expected)}
        ref_tiled = torch.cat(list(ref.tiled_decode(latent.bfloat16(), reference_tiling(tiling), generator=g())), 2)
        errors["tiled"] = rel_l2(torch.cat(list(tiled_decode(fast, latent.bfloat16(), tiling, generator=g())), 2),
                                 ref_tiled)
        unpatchify = decoder_module.unpatchify

        def swapped(x, p):  # channels read as (c, h offset, w offset) instead of (c, w offset, h offset)
            b, c, f, h, w = x.shape
            return unpatchify(x.reshape(b, c // (p * p), p, p, f, h, w).transpose(2, 3).reshape(b, c, f, h, w), p)
        monkeypatch.setattr(decoder_module, "unpatchify", swapped)
        control = rel_l2(ours(latent.bfloat16(), generator=g()), expected)
    print(f"\n19B decoder on {torch.cuda.get_device_name()}: rel L2 {errors}; control {control:.3e}")
    assert max(errors.values()) <= BOUND, errors
    assert control > BOUND
