"""The full-size LTX-2 19B video VAE on the GPU against ltx-core on the same random bf16 weights.

Decoder: 17 frames at 256x384 (latent 3 x 8 x 12), timestep-conditioned decode with the same
generator: one pass (plain weights: the eager path; channels-last weights: the fused kernels),
streamed one latent frame at a time, and the reference's tiling. Encoder: 17 frames at 256x384.

Two measures. Against ltx-core's bf16 result: relative L2 at most 3e-2 (plain weights: identical).
Against the float32 truth (ltx-core on the same weights in float32, TF32 off): the fused bf16 path
may err at most 1.25x as much as ltx-core's own bf16 result (the fused kernels round once where the
reference rounds after every step, so they are usually closer). Two independent bf16 results differ
by about sqrt(2) times their own error, which is why the first bound is 3e-2 when each errs ~1.5e-2.
A real porting error (the pixel unpatchify's height and width offsets swapped) gives ~1.
"""

import pytest
import torch

from tests.parity.reference import require_reference

pytestmark = [pytest.mark.gpu, pytest.mark.parity,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
BOUND = 3e-2
TRUTH_RATIO = 1.25


@pytest.fixture(autouse=True)
def _no_tf32():
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before
    import gc
    gc.collect()
    torch.cuda.empty_cache()


def rel_l2(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _float_copy(module_factory, state):
    with torch.device("meta"):
        model = module_factory()
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return model.eval()


def test_19b_decoder_matches_reference(monkeypatch):
    require_reference()
    from ltx_core.model.video_vae import VideoDecoderConfigurator

    import fastltx.models.video_vae.decoder as decoder_module
    from bench.video_vae import random_decoder, reference_decoder_on_weights
    from fastltx.layers.conv import to_channels_last
    from fastltx.models.video_vae import SpatialTiling, TemporalTiling, Tiling
    from fastltx.models.video_vae.decode import tiled_decode
    from fastltx.models.video_vae.layouts import vae_config
    from tests.parity.reference_video_vae import reference_tiling

    ours = random_decoder("v1", "19b", device="cuda")
    ref = reference_decoder_on_weights("v1", "19b", ours)
    section = {"vae": vae_config("v1", "19b").to_checkpoint_section()}
    ref32 = _float_copy(lambda: VideoDecoderConfigurator.from_config(section), ours.state_dict())
    fast = to_channels_last(random_decoder("v1", "19b", device="cuda"))
    assert fast.fused and not ours.fused
    latent = torch.randn(1, 128, 3, 8, 12, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    tiling = Tiling(SpatialTiling(128, 64), TemporalTiling(16, 8))

    def g():
        return torch.Generator("cuda").manual_seed(1)

    with torch.inference_mode():
        expected = ref(latent.bfloat16(), generator=g())
        truth = ref32(latent.bfloat16().float(), generator=g())
        fused = fast(latent.bfloat16(), generator=g())
        errors = {"one pass": rel_l2(ours(latent.bfloat16(), generator=g()), expected),
                  "channels-last": rel_l2(fused, expected),
                  "streamed": rel_l2(torch.cat(list(fast.decode_chunks(latent.bfloat16(), 1, generator=g())), 2),
                                     expected)}
        vs_truth = {"ltx-core bf16": rel_l2(expected, truth), "fused bf16": rel_l2(fused, truth)}
        ref_tiled = torch.cat(list(ref.tiled_decode(latent.bfloat16(), reference_tiling(tiling), generator=g())), 2)
        errors["tiled"] = rel_l2(torch.cat(list(tiled_decode(fast, latent.bfloat16(), tiling, generator=g())), 2),
                                 ref_tiled)
        unpatchify = decoder_module.unpatchify

        def swapped(x, p):  # channels read as (c, h offset, w offset) instead of (c, w offset, h offset)
            b, c, f, h, w = x.shape
            return unpatchify(x.reshape(b, c // (p * p), p, p, f, h, w).transpose(2, 3).reshape(b, c, f, h, w), p)
        monkeypatch.setattr(decoder_module, "unpatchify", swapped)
        control = rel_l2(ours(latent.bfloat16(), generator=g()), expected)
    print(f"\n19B decoder on {torch.cuda.get_device_name()}: rel L2 vs ltx-core bf16 {errors}; "
          f"vs float32 truth {vs_truth}; control {control:.3e}")
    assert errors["one pass"] == 0.0  # plain weights: the reference's own operations
    assert max(errors.values()) <= BOUND, errors
    assert vs_truth["fused bf16"] <= TRUTH_RATIO * vs_truth["ltx-core bf16"], vs_truth
    assert control > BOUND


def test_19b_encoder_matches_reference():
    """The full-size LTX-2 encoder (channels-last: fused kernels, causal, zero padding) against ltx-core's
    on the same random bf16 weights: 17 frames at 256x384."""
    require_reference()
    from ltx_core.model.video_vae import VideoEncoderConfigurator

    from fastltx.checkpoint.factory import random_state
    from fastltx.layers.conv import to_channels_last
    from fastltx.models.video_vae import VideoEncoder
    from fastltx.models.video_vae.layouts import vae_config

    cfg = vae_config("v1", "19b")
    section = {"vae": cfg.to_checkpoint_section()}
    with torch.device("meta"):
        ours, ref = VideoEncoder(cfg.encoder), VideoEncoderConfigurator.from_config(section)
    ours.load_state_dict(random_state(ours, 0, "cuda", torch.bfloat16), strict=True, assign=True)
    ref.load_state_dict(ours.state_dict(), strict=True, assign=True)
    ref32 = _float_copy(lambda: VideoEncoderConfigurator.from_config(section), ours.state_dict())
    video = torch.rand(1, 3, 17, 256, 384, device="cuda", generator=torch.Generator("cuda").manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        expected = ref.eval()(video.bfloat16())
        truth = ref32(video.bfloat16().float())
        plain = rel_l2(ours.eval()(video.bfloat16()), expected)
        fused = to_channels_last(ours)(video.bfloat16())
        fast = rel_l2(fused, expected)
        vs_truth = {"ltx-core bf16": rel_l2(expected, truth), "fused bf16": rel_l2(fused, truth)}
    print(f"\n19B encoder on {torch.cuda.get_device_name()}: rel L2 vs ltx-core bf16: plain {plain:.3e}, "
          f"channels-last (fused) {fast:.3e}; vs float32 truth {vs_truth}")
    assert plain == 0.0
    assert fast <= BOUND
    assert vs_truth["fused bf16"] <= TRUTH_RATIO * vs_truth["ltx-core bf16"], vs_truth
