"""Audio VAE and vocoder configs round-trip through the factory's headers; bad files fail clearly."""

import json

import pytest
import torch
from safetensors.torch import save_file

from fastltx.checkpoint.factory import make_checkpoint
from fastltx.checkpoint.safetensors_file import CheckpointError, read_header
from fastltx.checkpoint.tiny_audio import audio_vae_config, vocoder_config
from fastltx.models.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig, load_audio_decoder, load_audio_encoder
from fastltx.models.vocoder import VocoderConfig, build_vocoder, load_vocoder


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_headers_round_trip(tmp_path, version):
    path = make_checkpoint(tmp_path / "m.safetensors", version, parts=("audio_vae", "vocoder"))
    config = read_header(path).config()
    assert AudioVAEConfig.from_checkpoint_config(config, str(path)) == audio_vae_config(version)
    assert VocoderConfig.from_checkpoint_config(config, str(path)) == vocoder_config(version)
    assert ("bwe" in config["vocoder"]) == (version == "v2")
    assert ("preprocessing" in config["audio_vae"]) == (version == "v1")
    assert load_vocoder(path).output_sampling_rate == {"v1": 24000, "v2": 48000}[version]


def test_released_geometry_on_meta():
    """Full sizes give the published parameter counts (reference notes 1.0: encoder 21 M, decoder 32 M,
    LTX-2 vocoder 56 M)."""
    with torch.device("meta"):
        enc, dec = AudioEncoder(audio_vae_config("v1", "19b")), AudioDecoder(audio_vae_config("v1", "19b"))
        voc = build_vocoder(vocoder_config("v1", "19b"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert round(count(enc) / 1e6) == 21 and round(count(dec) / 1e6) == 32 and round(count(voc) / 1e6) == 56


def _file(path, config, tensors=None):
    save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata={"config": json.dumps(config)})
    return path


@pytest.mark.parametrize("section, message", [
    ({"model": {"params": {"ddconfig": {"norm_type": "group"}}}}, "ddconfig.norm_type='group'"),
    ({"model": {"params": {"ddconfig": {"causality_axis": "width"}}}}, "ddconfig.causality_axis='width'"),
    ({"model": {"params": {"ddconfig": {"ch": 64, "mel_bins": 64}}}}, "ch=64 entries but the latent has"),
])
def test_unsupported_audio_vae_layouts(tmp_path, section, message):
    path = _file(tmp_path / "a.safetensors", {"audio_vae": section})
    with pytest.raises(CheckpointError, match=message) as e:
        load_audio_encoder(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("section, message", [
    ({"resblock": "2", "stereo": True}, "vocoder.resblock='2'"),
    ({"resblock": "1"}, "vocoder.stereo=None"),
    ({"vocoder": {"resblock": "AMP1", "stereo": True, "activation": "snakebeta"}, "bwe": {}},
     "lacks the required key 'input_sampling_rate'"),
    ({"resblock": "1", "stereo": True, "upsample_rates": [2, 2]}, "differ in length"),
])
def test_unsupported_vocoder_layouts(tmp_path, section, message):
    with pytest.raises(CheckpointError, match=message):
        load_vocoder(_file(tmp_path / "v.safetensors", {"vocoder": section}))


def test_missing_sections_and_tensors(tmp_path):
    path = make_checkpoint(tmp_path / "t.safetensors", "v1", parts=("transformer",))
    with pytest.raises(CheckpointError, match="no 'audio_vae' section"):
        load_audio_decoder(path)
    with pytest.raises(CheckpointError, match="no 'vocoder' section"):
        load_vocoder(path)
    config = read_header(make_checkpoint(tmp_path / "a.safetensors", "v1", parts=("audio_vae",))).config()
    with pytest.raises(CheckpointError, match=r"audio VAE decoder: \d+ missing tensor"):
        load_audio_decoder(_file(tmp_path / "empty.safetensors", config))


def test_extra_statistics_are_ignored(tmp_path):
    """Some files carry more per_channel_statistics entries than the audio VAE uses."""
    src = make_checkpoint(tmp_path / "a.safetensors", "v2", parts=("audio_vae",))
    from safetensors.torch import load_file
    tensors = load_file(str(src))
    tensors["audio_vae.per_channel_statistics.mean-of-stds"] = torch.ones(128)
    path = _file(tmp_path / "extra.safetensors", read_header(src).config(), tensors)
    enc = load_audio_encoder(path, dtype=torch.float32)
    assert torch.equal(enc.per_channel_statistics.get_buffer("std-of-means"),
                       tensors["audio_vae.per_channel_statistics.std-of-means"].float())
