"""Audio VAE and vocoder parts of the tiny-model factory (registered in ``factory.PARTS``).

Sizes: "tiny" for tests and the demo; any other factory size ("19b", ...) gives the released
geometry (LTX-2 and LTX-2.3 share the audio VAE; the vocoders differ). Buffers the reference
loads from the file and uses as fixed signal-processing constants (the anti-aliasing filters, the
BWE's STFT and mel bases) are written with their true values, and the latent standard deviations
are positive, so random files behave like real ones.
"""

import functools

import numpy as np
import torch
from torch import nn

from fastltx.layers.mel import slaney_mel_filters
from fastltx.models.audio_vae import PREFIX as AUDIO_VAE_PREFIX
from fastltx.models.audio_vae import AudioDecoder, AudioEncoder, AudioVAEConfig
from fastltx.models.vocoder import PREFIX as VOCODER_PREFIX
from fastltx.models.vocoder import BWEConfig, GeneratorConfig, VocoderConfig, build_vocoder
from fastltx.models.vocoder.antialias import KERNEL, kaiser_sinc_filter

VERSIONS = ("v1", "v2")


def _check(version: str, size: str) -> bool:
    """True for the tiny size."""
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    return size == "tiny"


def audio_vae_config(version: str = "v1", size: str = "tiny") -> AudioVAEConfig:
    """The released audio VAE (both versions), or a narrow one with the same latent (8 x 16)."""
    if _check(version, size):
        # one block per level; channels 128 -> 256 -> 128 so both shortcut convolutions exist
        return AudioVAEConfig(ch=128, ch_mult=(1, 2, 1), num_res_blocks=1, mid_block_add_attention=False)
    return AudioVAEConfig(ch=128, ch_mult=(1, 2, 4), num_res_blocks=2, mid_block_add_attention=False)


def vocoder_config(version: str = "v1", size: str = "tiny") -> VocoderConfig:
    """LTX-2's 24 kHz HiFi-GAN ("v1") or LTX-2.3's 16 kHz AMP vocoder + 48 kHz BWE ("v2")."""
    tiny = _check(version, size)
    if version == "v1":
        return VocoderConfig(GeneratorConfig(upsample_initial_channel=32 if tiny else 1024))
    amp = dict(amp=True, use_tanh_at_final=False, use_bias_at_final=False)
    base = GeneratorConfig(upsample_initial_channel=64 if tiny else 1536, upsample_rates=(5, 2, 2, 2, 2, 2),
                           upsample_kernel_sizes=(11, 4, 4, 4, 4, 4), output_sampling_rate=16000, **amp)
    bwe = GeneratorConfig(upsample_initial_channel=32 if tiny else 512, upsample_rates=(6, 5, 2, 2, 2),
                          upsample_kernel_sizes=(12, 11, 4, 4, 4), output_sampling_rate=48000,
                          apply_final_activation=False, **amp)
    return VocoderConfig(base, BWEConfig(bwe, input_sampling_rate=16000, output_sampling_rate=48000, n_fft=512,
                                         hop_length=80, num_mels=64))


def _without(model: nn.Module, name: str) -> nn.Module:
    """A view of ``model`` whose state dict lacks the child ``name``."""
    view = nn.Module()
    for child_name, child in model.named_children():
        if child_name != name:
            view.add_module(child_name, child)
    return view


def _positive_std(key: str, t: torch.Tensor) -> torch.Tensor:
    return 0.5 + t.abs() if key.endswith("std-of-means") else t


def audio_vae_part(version: str, size: str):
    from fastltx.checkpoint.factory import Part

    cfg = audio_vae_config(version, size)
    with torch.device("meta"):
        encoder, decoder = AudioEncoder(cfg), AudioDecoder(cfg)
    modules = {AUDIO_VAE_PREFIX + "encoder.": _without(encoder, "per_channel_statistics"),
               AUDIO_VAE_PREFIX + "decoder.": _without(decoder, "per_channel_statistics"),
               AUDIO_VAE_PREFIX + "per_channel_statistics.": encoder.per_channel_statistics}
    # LTX-2 headers also spell the preprocessing block; LTX-2.3 headers only the model block.
    return Part({"audio_vae": cfg.to_checkpoint_section(preprocessing=version == "v1")}, modules, _positive_std)


@functools.lru_cache(maxsize=4)
def stft_bases(n_fft: int, hop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (Hann-windowed DFT: real rows, then imaginary rows) and inverse (windowed
    pseudo-inverse) bases, each (2 * (n_fft // 2 + 1), 1, n_fft)."""
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    fourier = np.concatenate([np.cos(2 * np.pi * k * n / n_fft), -np.sin(2 * np.pi * k * n / n_fft)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft)  # periodic Hann
    inverse = np.linalg.pinv(n_fft / hop * fourier).T * window
    as_t = lambda a: torch.from_numpy(a[:, None, :]).float()  # noqa: E731
    return as_t(fourier * window), as_t(inverse)


def _vocoder_buffers(cfg: VocoderConfig):
    def adjust(key: str, t: torch.Tensor) -> torch.Tensor:
        if key.endswith(("upsample.filter", "lowpass.filter")):
            return kaiser_sinc_filter(0.25, 0.3, KERNEL).to(t.dtype)
        if cfg.bwe is not None and ".mel_stft." in key:
            b = cfg.bwe
            forward, inverse = stft_bases(b.n_fft, b.hop_length)
            true = {"forward_basis": forward, "inverse_basis": inverse,
                    "mel_basis": slaney_mel_filters(b.input_sampling_rate, b.n_fft, b.num_mels)}[key.rsplit(".", 1)[-1]]
            return true.to(t.dtype)
        if cfg.bwe is not None and key.endswith("conv_post.weight"):
            # SnakeBeta stacks grow random activations: keep the waveforms mostly inside [-1, 1]
            return t * (0.01 if ".bwe_generator." in key else 0.03)
        return t
    return adjust


def vocoder_part(version: str, size: str):
    from fastltx.checkpoint.factory import Part

    cfg = vocoder_config(version, size)
    with torch.device("meta"):
        model = build_vocoder(cfg)
    return Part({"vocoder": cfg.to_checkpoint_section()}, {VOCODER_PREFIX: model}, _vocoder_buffers(cfg))



def _random_model(build, adjust, prefix: str, seed: int, device, dtype) -> nn.Module:
    """A model built in memory with the factory's random values (benchmarks write no files)."""
    from fastltx.checkpoint.factory import random_state

    with torch.device("meta"):
        model = build()
    state = {k: adjust(prefix + k, t) for k, t in random_state(model, seed, device, dtype).items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def random_audio_decoder(version: str = "v1", size: str = "tiny", seed: int = 0, device="cpu",
                         dtype: torch.dtype = torch.bfloat16) -> AudioDecoder:
    cfg = audio_vae_config(version, size)
    return _random_model(lambda: AudioDecoder(cfg), _positive_std, AUDIO_VAE_PREFIX + "decoder.", seed, device, dtype)


def random_vocoder(version: str = "v1", size: str = "tiny", seed: int = 0, device="cpu",
                   dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    cfg = vocoder_config(version, size)
    return _random_model(lambda: build_vocoder(cfg), _vocoder_buffers(cfg), VOCODER_PREFIX, seed, device, dtype)
