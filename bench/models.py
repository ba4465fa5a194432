"""Our models at their released sizes ("19b") or tiny, with random weights built in memory on one device.

No files are written or read: every tensor is generated where it lives (``random_state``, seeded, so
every process of a multi-GPU benchmark builds the very same weights). ``build_ours`` returns the
models under ``Components``' attribute names, so ``components.__dict__.update(models)`` hands them
to a pipeline. Shared by bench/pipeline.py (which builds the reference's models on these tensors)
and bench/distributed_pipeline.py.
"""

import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.video_vae import random_decoder
from fastltx.checkpoint.factory import random_state, random_transformer, transformer_config
from fastltx.checkpoint.tiny_audio import audio_vae_config, random_audio_decoder, random_vocoder
from fastltx.models.video_vae import VideoEncoder
from fastltx.models.video_vae.layouts import adjust_tensor, vae_config


def random_encoder(size: str, device, seed: int = 2, dtype: torch.dtype = torch.bfloat16) -> VideoEncoder:
    cfg = vae_config("v1", size).encoder
    with torch.device("meta"):
        model = VideoEncoder(cfg)
    state = {k: adjust_tensor(k, t) for k, t in random_state(model, seed, device, dtype).items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def random_text_encoder(size: str, device, tokenizer_dir: Path, dtype: torch.dtype = torch.bfloat16):
    """Our TextEncoder: Gemma 3's language model (12B for "19b") + the LTX-2 text projection and connectors."""
    from transformers import Gemma3Config

    from fastltx.models.text_encoder import GemmaEncoder, TextEncoder, TextProcessor
    from fastltx.models.text_encoder.gemma import MAX_LENGTH, assign_weights, build_language_model, load_tokenizer
    from fastltx.models.text_encoder.tiny import gemma_config, text_config

    language_model = build_language_model(Gemma3Config.from_dict(gemma_config(size)).text_config)  # on meta
    assign_weights(language_model, random_state(language_model, 0, device, dtype), device)
    with torch.device("meta"):
        processor = TextProcessor(text_config("v1", size))
    state = random_state(processor, 1, device, dtype)
    state = {k: (t.float() * 10).to(t.dtype) if k.endswith("learnable_registers") else t for k, t in state.items()}
    processor.load_state_dict(state, strict=True, assign=True)
    return TextEncoder(GemmaEncoder(language_model, load_tokenizer(tokenizer_dir), MAX_LENGTH), processor.eval())


def random_upsampler(size: str, device, seed: int = 6, dtype: torch.dtype = torch.bfloat16):
    """The x2 spatial latent upsampler (released geometry: mid 512, 4 blocks per stage)."""
    from fastltx.models.upsampler.model import LatentUpsampler
    from fastltx.models.upsampler.tiny import upsampler_config

    with torch.device("meta"):
        model = LatentUpsampler(upsampler_config("spatial_x2", "full" if size == "19b" else "tiny"))
    model.load_state_dict(random_state(model, seed, device, dtype), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def build_ours(size: str, device: torch.device, tokenizer_dir: Path, dtype: torch.dtype = torch.bfloat16,
               channels_last: bool = True, log: Callable[[str], None] | None = print) -> dict:
    """Every model the distilled pipeline runs, by ``Components`` attribute name (plus ``audio_latent``).

    ``channels_last``: on CUDA the video decoder is converted as its loader converts it (new
    parameter storage); pass False to build something else on its plain tensors first."""
    from fastltx.layers.conv import to_channels_last

    say = log or (lambda _: None)
    ours = {}
    t0 = time.perf_counter()
    ours["_transformer"] = random_transformer(transformer_config("v1", size), seed=0, device=device, dtype=dtype)
    say(f"  transformer: {time.perf_counter() - t0:.1f} s")
    ours["text_encoder"] = random_text_encoder(size, device, tokenizer_dir, dtype)
    say(f"  text: {time.perf_counter() - t0:.1f} s")
    encoder = random_encoder(size, device, dtype=dtype)
    ours["video_encoder"] = encoder  # the pipelines read its latent statistics (no images): not converted
    decoder = random_decoder("v1", size, seed=3, device=device, dtype=dtype)
    with torch.no_grad():  # one checkpoint holds one set of latent statistics for encoder and decoder
        for name, buf in decoder.per_channel_statistics.named_buffers():
            buf.copy_(dict(encoder.per_channel_statistics.named_buffers())[name])
    ours["video_decoder"] = to_channels_last(decoder) if channels_last and device.type == "cuda" else decoder
    ours["audio_decoder"] = random_audio_decoder("v1", size, seed=4, device=device, dtype=dtype)
    ours["vocoder"] = random_vocoder("v1", size, seed=5, device=device, dtype=dtype)
    ours["upsampler"] = random_upsampler(size, device, dtype=dtype)
    acfg = audio_vae_config("v1", size)
    ours["audio_latent"] = (acfg.z_channels, acfg.latent_mel_bins)
    say(f"  all models: {time.perf_counter() - t0:.1f} s")
    return ours
