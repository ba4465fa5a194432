"""Audio VAE parity against ltx-core 1.0.0: same checkpoint file, loaded by each side's own loader.

Error measure: max |ours - ref| / max |ref|. float32 bound 1e-5 (measured: 0, bit-identical on CPU);
bf16 bound 4e-3, one bf16 rounding step (2^-8) of the largest value (measured: 0; same op order).
"""

import pytest
import torch

from fastltx.checkpoint.factory import Part, make_checkpoint, random_state, write_checkpoint
from fastltx.checkpoint.tiny_audio import _positive_std, _without
from fastltx.models.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig, load_audio_decoder, load_audio_encoder
from tests.helpers import max_rel_error
from tests.parity.audio_reference import reference_audio_decoder, reference_audio_encoder
from tests.parity.reference import require_reference

pytestmark = pytest.mark.parity
BOUND = {torch.float32: 1e-5, torch.bfloat16: 4e-3}
# Two levels (latent 4 x 32 mel bins = 128 features), attention in the mid block and on level 1.
ATTENTION = AudioVAEConfig(ch=128, ch_mult=(1, 2), num_res_blocks=1, z_channels=4, attn_resolutions=(128,),
                           mid_block_add_attention=True)
# Latent frames of the encoder and decoder cases (the mel has 4 T - 3): bf16 on fewer, since PyTorch's
# bf16 convolutions take a slow path on CPUs without AVX-512.
LATENT_FRAMES = {torch.float32: 11, torch.bfloat16: 3}
ATTENTION_FRAMES = {torch.float32: 7, torch.bfloat16: 4}


@pytest.fixture(scope="module", autouse=True)
def _reference():
    require_reference()


def write_audio_vae(path, cfg: AudioVAEConfig, seed: int):
    """A random checkpoint for any audio VAE configuration, in the factory's layout."""
    with torch.device("meta"):
        enc, dec = AudioEncoder(cfg), AudioDecoder(cfg)
    part = Part({"audio_vae": cfg.to_checkpoint_section()},
                {"audio_vae.encoder.": _without(enc, "per_channel_statistics"),
                 "audio_vae.decoder.": _without(dec, "per_channel_statistics"),
                 "audio_vae.per_channel_statistics.": enc.per_channel_statistics}, _positive_std)
    tensors = {}
    for i, (prefix, module) in enumerate(part.modules.items()):
        tensors.update({prefix + k: part.adjust(prefix + k, t) for k, t in random_state(module, seed + i).items()})
    return write_checkpoint(path, tensors, part.config)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio_vae")
    return {"v1": make_checkpoint(root / "v1.safetensors", "v1", seed=11, parts=("audio_vae",)),
            "v2": make_checkpoint(root / "v2.safetensors", "v2", seed=12, parts=("audio_vae",)),
            "attention": write_audio_vae(root / "attention.safetensors", ATTENTION, seed=13)}


@pytest.fixture(scope="module")
def models(checkpoints):
    cache = {}

    def get(name, dtype, part):
        key = (name, dtype, part)
        if key not in cache:
            path = checkpoints[name]
            if part == "encoder":
                cache[key] = load_audio_encoder(path, dtype=dtype), reference_audio_encoder(path, dtype)
            else:
                cache[key] = load_audio_decoder(path, dtype=dtype), reference_audio_decoder(path, dtype)
        return cache[key]
    return get


def mel(batch: int, frames: int, dtype, seed: int = 0, bins: int = 64) -> torch.Tensor:
    """Log-mel-like input: values around log(1e-2) with unit spread."""
    return (torch.randn(batch, 2, frames, bins, generator=torch.Generator().manual_seed(seed)) - 4.0).to(dtype)


def latent(batch: int, frames: int, dtype, channels: int = 8, bins: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, frames, bins, generator=torch.Generator().manual_seed(seed)).to(dtype)


def compare(ours, ref, x, dtype, shape):
    with torch.no_grad():
        o, r = ours(x), ref(x)
    assert o.shape == r.shape == shape and o.dtype == r.dtype == dtype
    assert torch.isfinite(o).all() and r.abs().max() > 0.1
    err = max_rel_error(o, r)
    assert err <= BOUND[dtype], err
    return err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_encoder(models, version, dtype):
    ours, ref = models(version, dtype, "encoder")
    t = LATENT_FRAMES[dtype]
    compare(ours, ref, mel(2, 4 * t - 3, dtype), dtype, (2, 8, t, 16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_decoder(models, version, dtype):
    ours, ref = models(version, dtype, "decoder")
    t = LATENT_FRAMES[dtype]
    compare(ours, ref, latent(2, t, dtype), dtype, (2, 2, 4 * t - 3, 64))


@pytest.mark.parametrize("frames", [1, 2, 38])  # lengths that are not 4k + 1 (the encoder rounds up)
def test_encoder_odd_lengths(models, frames):
    ours, ref = models("v1", torch.float32, "encoder")
    compare(ours, ref, mel(1, frames, torch.float32, seed=frames), torch.float32, (1, 8, (frames - 1) // 4 + 1, 16))


def test_decoder_single_latent_frame(models):
    ours, ref = models("v2", torch.float32, "decoder")
    compare(ours, ref, latent(1, 1, torch.float32), torch.float32, (1, 2, 1, 64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_and_two_levels(models, dtype):
    """Attention blocks (mid and level 1), and a decoder whose raw output is zero padded to 4T - 3."""
    enc, ref_enc = models("attention", dtype, "encoder")
    assert enc.mid.attn_1 is not None and len(enc.down[1].attn) == 1
    t = ATTENTION_FRAMES[dtype]  # the mel has 4 T - 3 frames, its latent 2 T - 1 (one downsampling level)
    z = compare(enc, ref_enc, mel(1, 4 * t - 3, dtype), dtype, (1, 4, 2 * t - 1, 32))
    dec, ref_dec = models("attention", dtype, "decoder")
    compare(dec, ref_dec, latent(1, t, dtype, channels=4, bins=32), dtype, (1, 2, 4 * t - 3, 64))
    assert z <= BOUND[dtype]


def test_round_trip_shapes_and_causality(models):
    """Encoder then decoder keeps 4k + 1 frames; a later mel frame never changes earlier latents."""
    enc, _ = models("v1", torch.float32, "encoder")
    dec, _ = models("v1", torch.float32, "decoder")
    x = mel(1, 41, torch.float32)
    with torch.no_grad():
        z = enc(x)
        y = x.clone()
        y[:, :, 37:] += 1.0  # change mel frames 37.. (latent frame 9 covers mel frames 33..36 and earlier)
        assert torch.equal(enc(y)[:, :, :10], z[:, :, :10]) and not torch.equal(enc(y)[:, :, 10], z[:, :, 10])
        assert dec(z).shape == x.shape


def test_parity_measure_catches_a_porting_error(checkpoints, models):
    """Control: padding the time axis symmetrically (a non-causal conv) is far outside the bound."""
    _, ref = models("v1", torch.float32, "decoder")
    wrong = load_audio_decoder(checkpoints["v1"], dtype=torch.float32)
    wrong.up[1].block[0].conv1.padding = (1, 1, 1, 1)
    with pytest.raises(AssertionError):
        compare(wrong, ref, latent(2, 11, torch.float32), torch.float32, (2, 2, 41, 64))
    wrong = load_audio_encoder(checkpoints["v1"], dtype=torch.float32)
    _, ref = models("v1", torch.float32, "encoder")
    wrong.per_channel_statistics.normalize = lambda x: x  # statistics forgotten
    with pytest.raises(AssertionError):
        compare(wrong, ref, mel(2, 41, torch.float32), torch.float32, (2, 8, 11, 16))
