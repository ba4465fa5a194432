"""Latent upsampler parity against ltx-core 1.0.0 (its own builder and ``upsample_video``).

Every upsampler kind of 1.0.0: spatial x2 (3-D and 2-D models), rational x1.5 and x0.75 (the blur
kernel read from the file), temporal x2, spatial and temporal x2 at once; each in a random tiny
file with the flat header config and unprefixed names, wrapped by un-normalise / upsample /
normalise with the video VAE's statistics. float32 bound 1e-5, bf16 bound 4e-3; measured 0 in both
(bit-identical).
"""

import pytest
import torch

from fastltx.checkpoint.factory import make_checkpoint
from fastltx.checkpoint.safetensors_file import CheckpointError, read_header
from fastltx.models.upsampler import load_latent_upsampler, upsample_latent
from fastltx.models.upsampler.tiny import upsampler_config, write_upsampler
from fastltx.models.video_vae import load_latent_statistics
from tests.helpers import max_rel_error
from tests.parity.reference_video_vae import reference_upsampler, reference_video_encoder, require_reference

pytestmark = pytest.mark.parity
BOUND = {torch.float32: 1e-5, torch.bfloat16: 4e-3}
KINDS = {
    "spatial_x2": upsampler_config("spatial_x2"),
    "spatial_x2_2d": upsampler_config("spatial_x2", dims=2),
    "spatial_x1.5": upsampler_config("spatial_x1.5"),
    "spatial_x0.75": upsampler_config("spatial_x1.5", spatial_scale=0.75),
    "temporal_x2": upsampler_config("temporal_x2"),
    "spatiotemporal_x2": upsampler_config("temporal_x2", spatial_upsample=True),
}
OUT_SHAPE = {"spatial_x2": (3, 8, 12), "spatial_x2_2d": (3, 8, 12), "spatial_x1.5": (3, 6, 9),
             "spatial_x0.75": (3, 3, 5), "temporal_x2": (5, 4, 6), "spatiotemporal_x2": (5, 8, 12)}


@pytest.fixture(scope="module", autouse=True)
def _reference():
    require_reference()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("upsampler")
    out = {kind: write_upsampler(root / f"{kind}.safetensors", cfg, seed=i)
           for i, (kind, cfg) in enumerate(KINDS.items())}
    out["vae"] = make_checkpoint(root / "vae.safetensors", "v1", seed=9, parts=("vae",))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", list(KINDS))
def test_upsample(files, kind, dtype):
    from ltx_core.model.upsampler import upsample_video
    ours, ref = load_latent_upsampler(files[kind], dtype=dtype), reference_upsampler(files[kind], dtype)
    stats, encoder = load_latent_statistics(files["vae"], dtype=dtype), reference_video_encoder(files["vae"], dtype)
    latent = torch.randn(1, 128, 3, 4, 6, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        out, expected = upsample_latent(latent, ours, stats), upsample_video(latent, encoder, ref)
    assert out.shape == expected.shape == (1, 128) + OUT_SHAPE[kind]
    assert torch.isfinite(out).all()
    error = max_rel_error(out, expected)
    assert error <= BOUND[dtype], error


def test_files_have_the_official_layout(files):
    header = read_header(files["spatial_x1.5"])
    assert header.config() == KINDS["spatial_x1.5"].to_checkpoint_config()
    assert {"initial_conv.weight", "res_blocks.0.conv1.weight", "upsampler.conv.weight", "upsampler.blur_down.kernel",
            "post_upsample_res_blocks.0.norm2.bias", "final_conv.bias"} <= set(header.tensors)
    assert "upsampler.0.weight" in read_header(files["spatial_x2"]).tensors
    kernel = load_latent_upsampler(files["spatial_x1.5"], dtype=torch.float32).upsampler.blur_down.kernel
    assert torch.equal(kernel[0, 0, 2], torch.tensor([6, 24, 36, 24, 6]) / 256)  # the true binomial values


def test_control_wrong_pixel_shuffle_order_is_caught(files, monkeypatch):
    """Control: the spatial x2 pixel shuffle reading its channels as (c, w offset, h offset) instead of
    (c, h offset, w offset) is far outside the bound."""
    ours = load_latent_upsampler(files["spatial_x2"], dtype=torch.float32)
    ref = reference_upsampler(files["spatial_x2"], torch.float32)
    latent = torch.randn(1, 128, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    shuffle = ours.upsampler[1]
    right = shuffle.forward

    def swapped(x):
        n, c, h, w = x.shape
        return right(x.reshape(n, c // 4, 2, 2, h, w).transpose(2, 3).reshape(n, c, h, w))
    with torch.no_grad():
        assert max_rel_error(ours(latent), ref(latent)) == 0
        monkeypatch.setattr(shuffle, "forward", swapped)
        assert max_rel_error(ours(latent), ref(latent)) > 1e-2


def test_bad_latent_and_config(files, tmp_path):
    ours = load_latent_upsampler(files["spatial_x2"], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"expected a latent of shape \(B, 128, F, H, W\), got \(1, 64, 2, 2, 2\)"):
        ours(torch.zeros(1, 64, 2, 2, 2))
    from fastltx.checkpoint.factory import write_checkpoint
    for config, message in [({"spatial_upsample": False}, "neither spatial_upsample nor temporal_upsample"),
                            ({"rational_resampler": True, "spatial_scale": 3.0}, "spatial_scale 3.0 is not one of"),
                            ({"dims": 2, "temporal_upsample": True}, "a 2-D upsampler can only upsample spatially"),
                            ({"mid_channels": 48}, "multiple of 32"), ({"mid_channels": "512"}, "must be an integer")]:
        path = write_checkpoint(tmp_path / "u.safetensors", {"x": torch.zeros(1)}, config)
        with pytest.raises(CheckpointError, match=message):
            load_latent_upsampler(path)
