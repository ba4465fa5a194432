"""Video VAE parity against ltx-core 1.0.0: the same checkpoint file, loaded by each side's own loader.

Error measure: max |ours - ref| / max |ref|. float32 bound 1e-5; measured 0 (bit-identical) for
encode, decode with and without timestep conditioning, the reference's tiled decode and tiled
encode, both released layouts and a layout with every other block type. Our streamed decode against
the reference's one pass: measured 2.1e-6 to 4.7e-6 (element-wise kernels and small convolutions
round a few values differently on chunk-sized tensors, and the tiny models' 4-wide PixelNorm
amplifies that; nothing else differs). bf16 bound 4e-3, one bf16 rounding
step; measured 0 as well (same operations in the same order, so bf16 rounds alike). uint8 frames:
identical, untiled and tiled.
"""

import dataclasses

import pytest
import torch

import fastltx.models.video_vae.encoder as encoder_module
from fastltx.checkpoint.factory import make_checkpoint
from fastltx.models.video_vae import (Block, DecoderConfig, EncoderConfig, SpatialTiling, TemporalTiling, Tiling,
                                      VideoVAEConfig, decode_video, load_video_decoder, load_video_encoder)
from fastltx.models.video_vae import ops as vae_ops
from fastltx.models.video_vae.decode import tiled_decode, tiled_encode
from fastltx.models.video_vae.layouts import write_video_vae
from tests.helpers import max_rel_error
from tests.parity.reference_video_vae import (reference_tiling, reference_video_decoder, reference_video_encoder,
                                              require_reference)

pytestmark = pytest.mark.parity
BOUND = {torch.float32: 1e-5, torch.bfloat16: 4e-3}


def _res(n=1, **kw):
    return Block("res_x", num_layers=n, **kw)


# Every block type the released layouts do not use: plain strided encoder convolutions, res_x_y
# (GroupNorm(1) shortcut), compress_all_x_y, per-channel log-variance, replicate padding; a causal,
# timestep-conditioned decoder with noise injection, a width-changing resnet and unstrided upsamplers.
ALL_BLOCKS = VideoVAEConfig(
    EncoderConfig((_res(), Block("res_x_y", multiplier=2), Block("compress_space"), Block("compress_time"),
                   Block("compress_all_x_y", multiplier=2), Block("compress_all"), _res()),
                  latent_channels=16, latent_log_var="per_channel", spatial_padding_mode="replicate"),
    DecoderConfig(tuple(reversed((_res(inject_noise=True), Block("compress_all", multiplier=2, residual=True),
                                  Block("res_x_y", multiplier=2), Block("compress_time"), Block("compress_space"),
                                  Block("compress_all"), _res()))),
                  latent_channels=16, base_channels=2, causal=True, spatial_padding_mode="replicate"))
# Narrow and cheap, for tiled encoding: *_res downsamplers, constant log-variance, a v2-like decoder.
NARROW = VideoVAEConfig(
    EncoderConfig((_res(), Block("compress_space_res", multiplier=1), Block("compress_time_res", multiplier=2),
                   Block("compress_all_res", multiplier=1), Block("compress_all_res", multiplier=1), _res()),
                  latent_channels=16, latent_log_var="constant", spatial_padding_mode="zeros"),
    DecoderConfig((_res(), Block("compress_space", multiplier=2), _res(), Block("compress_time", multiplier=2),
                   Block("compress_all"), Block("compress_all", multiplier=2), _res()),
                  latent_channels=16, base_channels=4, timestep_conditioning=False, spatial_padding_mode="zeros"))

CAUSAL = dataclasses.replace(NARROW, decoder=dataclasses.replace(NARROW.decoder, causal=True))


@pytest.fixture(scope="module", autouse=True)
def _reference():
    require_reference()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae")
    return {"v1": make_checkpoint(root / "v1.safetensors", "v1", seed=5, parts=("vae",)),
            "v2": make_checkpoint(root / "v2.safetensors", "v2", seed=6, parts=("vae",)),
            "all": write_video_vae(root / "all.safetensors", ALL_BLOCKS, seed=7),
            "narrow": write_video_vae(root / "narrow.safetensors", NARROW, seed=8),
            "causal": write_video_vae(root / "causal.safetensors", CAUSAL, seed=9)}


@pytest.fixture(scope="module")
def models(files):
    cache = {}

    def get(name, part, dtype=torch.float32):
        key = (name, part, dtype)
        if key not in cache:
            ours = (load_video_encoder if part == "encoder" else load_video_decoder)(files[name], dtype=dtype)
            ref = (reference_video_encoder if part == "encoder" else reference_video_decoder)(files[name], dtype)
            cache[key] = ours, ref
        return cache[key]
    return get


def video(frames, height, width, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(1, 3, frames, height, width, generator=gen) * 2 - 1).to(dtype)


def latent(shape, dtype=torch.float32, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def gen(seed=10):
    return torch.Generator().manual_seed(seed)


def check(ours, ref, dtype=torch.float32):
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    assert torch.isfinite(ours).all()
    error = max_rel_error(ours, ref)
    assert error <= BOUND[dtype], error
    return error


def check_chunks(ours, ref, dtype=torch.float32):
    assert [o.shape for o in ours] == [r.shape for r in ref]
    return max(check(o, r, dtype) for o, r in zip(ours, ref, strict=True) if r.numel())


def ref_frames(chunks_iter):
    return torch.cat(list(chunks_iter))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["v1", "v2", "all"])
def test_encode(models, name, dtype):
    ours, ref = models(name, "encoder", dtype)
    x = video(9, 32, 64, dtype)
    with torch.no_grad():
        check(ours(x), ref(x), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["v1", "v2", "all"])
def test_decode(models, name, dtype):
    ours, ref = models(name, "decoder", dtype)
    z = latent((1, ours.cfg.latent_channels, 3, 2, 3), dtype)
    with torch.no_grad():
        out = ours(z, generator=gen())
        check(out, ref(z, generator=gen()), dtype)
        if ours.cfg.timestep_conditioning:  # the noise really comes from the generator
            assert max_rel_error(ours(z, generator=gen(11)), out) > 1e-3


@pytest.mark.parametrize("name", ["v1", "all"])
def test_decode_with_timestep(models, name):
    ours, ref = models(name, "decoder")
    z = latent((2, ours.cfg.latent_channels, 2, 2, 2))
    t = torch.tensor([0.2, 0.7])
    with torch.no_grad():
        out = ours(z, t, gen())
        check(out, ref(z, t, gen()))
        assert max_rel_error(out, ours(z, None, gen())) > 1e-3  # the default 0.05 is another decode


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["v1", "v2"])
def test_uint8_frames(models, name, dtype):
    require_reference()
    from ltx_core.model.video_vae import decode_video as ref_decode_video
    ours, ref = models(name, "decoder", dtype)
    z = latent((1, 128, 2, 2, 3), dtype)
    with torch.no_grad():
        frames = ref_frames(decode_video(ours, z, gen(), tiling=None))
        expected = ref_frames(ref_decode_video(z, ref, None, gen()))
    assert frames.dtype == torch.uint8 and frames.shape == (9, 64, 96, 3)
    assert torch.equal(frames, expected)
    assert frames.float().std() > 20  # not a saturated or constant picture


TILINGS = [
    Tiling(SpatialTiling(64, 32), TemporalTiling(16, 8)),
    Tiling(SpatialTiling(96, 32), TemporalTiling(16, 0)),
    Tiling(None, TemporalTiling(24, 8)),
    Tiling(SpatialTiling(64, 0), TemporalTiling(16, 8)),
]


def tiling_id(t: Tiling) -> str:
    s = f"{t.spatial.tile}/{t.spatial.overlap}px" if t.spatial else "no-space"
    return s + (f"-{t.temporal.tile}/{t.temporal.overlap}f" if t.temporal else "-no-time")


@pytest.mark.parametrize("tiling", TILINGS, ids=tiling_id)
@pytest.mark.parametrize("name", ["v1", "v2"])
def test_tiled_decode(models, name, tiling):
    ours, ref = models(name, "decoder")
    z = latent((1, 128, 4, 2, 4))
    with torch.no_grad():
        check_chunks(list(tiled_decode(ours, z, tiling, generator=gen())),
                     list(ref.tiled_decode(z, reference_tiling(tiling), generator=gen())))


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_tiled_uint8_frames(models, name):
    require_reference()
    from ltx_core.model.video_vae import decode_video as ref_decode_video
    ours, ref = models(name, "decoder")
    z, tiling = latent((1, 128, 4, 2, 3), seed=2), TILINGS[0]
    with torch.no_grad():
        frames = ref_frames(decode_video(ours, z, gen(), tiling=tiling))
        assert torch.equal(frames, ref_frames(ref_decode_video(z, ref, reference_tiling(tiling), gen())))
    assert frames.shape == (25, 64, 96, 3)


def test_tiled_decode_bf16_and_timestep(models):
    ours, ref = models("v1", "decoder", torch.bfloat16)
    z, t, tiling = latent((1, 128, 4, 2, 3), torch.bfloat16), torch.tensor([0.3]), TILINGS[0]
    with torch.no_grad():
        check_chunks(list(tiled_decode(ours, z, tiling, t, gen())),
                     list(ref.tiled_decode(z, reference_tiling(tiling), t, gen())), torch.bfloat16)


def test_tiled_decode_other_blocks(models):
    ours, ref = models("all", "decoder")
    z, tiling = latent((1, 16, 4, 2, 3)), TILINGS[0]
    with torch.no_grad():
        check_chunks(list(tiled_decode(ours, z, tiling, generator=gen())),
                     list(ref.tiled_decode(z, reference_tiling(tiling), generator=gen())))


def test_spatial_only_tiling_is_one_temporal_tile(models):
    """The reference cannot tile only spatially (it needs a temporal config); ours treats it as one
    temporal tile, which is the reference's result with a temporal tile longer than the video."""
    ours, ref = models("v2", "decoder")
    z = latent((1, 128, 2, 2, 3))
    spatial = SpatialTiling(64, 32)
    with torch.no_grad():
        check_chunks(list(tiled_decode(ours, z, Tiling(spatial, None))),
                     list(ref.tiled_decode(z, reference_tiling(Tiling(spatial, TemporalTiling(64, 0))))))


@pytest.mark.parametrize("chunk", [1, 2])
@pytest.mark.parametrize("name", ["v1", "v2", "narrow", "causal"])
def test_streamed_decode_matches_one_pass(models, name, chunk):
    ours, ref = models(name, "decoder")
    z = latent((1, ours.cfg.latent_channels, 5, 2, 3))
    with torch.no_grad():
        pieces = list(ours.decode_chunks(z, chunk, generator=gen()))
        check(torch.cat(pieces, dim=2), ref(z, generator=gen()))
    assert len(pieces) > 2


ENCODE_TILINGS = [
    Tiling(SpatialTiling(96, 64), TemporalTiling(24, 16)),
    Tiling(SpatialTiling(128, 32), None),  # overlap raised to 64 px, as the reference does
    Tiling(None, TemporalTiling(24, 8)),
]


@pytest.mark.parametrize("tiling", ENCODE_TILINGS, ids=tiling_id)
def test_tiled_encode(models, tiling):
    ours, ref = models("narrow", "encoder")
    x = video(25, 64, 160)
    with torch.no_grad():
        check(tiled_encode(ours, x, tiling), ref.tiled_encode(x, reference_tiling(tiling)))


def test_tiled_encode_bf16(models):
    ours, ref = models("narrow", "encoder", torch.bfloat16)
    x = video(25, 64, 160)  # float32 pixels: both move each tile to the model's dtype
    with torch.no_grad():
        check(tiled_encode(ours, x, ENCODE_TILINGS[0]), ref.tiled_encode(x, reference_tiling(ENCODE_TILINGS[0])),
              torch.bfloat16)


def test_parity_measure_catches_porting_errors(models, monkeypatch):
    """Controls: the height offset made the more significant one in the pixel patchify, and rounding
    instead of truncating to uint8, are both caught."""
    ours, ref = models("v2", "encoder")
    x = video(9, 32, 64)
    wrong_patchify = lambda v, p: vae_ops.patchify(v.transpose(3, 4), p).transpose(3, 4)  # noqa: E731
    monkeypatch.setattr(encoder_module, "patchify", wrong_patchify)
    with torch.no_grad(), pytest.raises(AssertionError):
        check(ours(x), ref(x))
    monkeypatch.undo()
    decoder, _ = models("v2", "decoder")
    with torch.no_grad():
        decoded = decoder(latent((1, 128, 2, 2, 2)))
    truncated = vae_ops.to_uint8_frames(decoded)
    rounded = (((decoded + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)[0].permute(1, 2, 3, 0)
    assert not torch.equal(truncated, rounded)


def test_all_blocks_layout_is_what_it_claims():
    kinds = {b.kind for b in ALL_BLOCKS.encoder.blocks} | {b.kind for b in ALL_BLOCKS.decoder.blocks}
    assert kinds == {"res_x", "res_x_y", "compress_space", "compress_time", "compress_all", "compress_all_x_y"}
    assert ALL_BLOCKS.decoder.causal and any(b.inject_noise for b in ALL_BLOCKS.decoder.blocks)
