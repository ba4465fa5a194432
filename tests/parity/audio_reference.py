"""The reference's audio components loaded by its own builder, configurators and key filters."""

import sys

import torch

from tests.parity.reference import require_reference


def _build(configurator_name: str, filter_name: str, path, dtype):
    require_reference()
    import ltx_core.model.audio_vae as audio_vae
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder

    builder = SingleGPUModelBuilder(model_class_configurator=getattr(audio_vae, configurator_name),
                                    model_path=str(path), model_sd_ops=getattr(audio_vae, filter_name))
    return builder.build(device=torch.device("cpu"), dtype=dtype).eval()


def reference_audio_encoder(path, dtype):
    return _build("AudioEncoderConfigurator", "AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER", path, dtype)


def reference_audio_decoder(path, dtype):
    return _build("AudioDecoderConfigurator", "AUDIO_VAE_DECODER_COMFY_KEYS_FILTER", path, dtype)


def reference_vocoder(path, dtype):
    return _build("VocoderConfigurator", "VOCODER_COMFY_KEYS_FILTER", path, dtype)


def real_torchaudio() -> bool:
    """Whether a working torchaudio (not the import stand-in) is loaded or loadable."""
    require_reference()
    return hasattr(sys.modules.get("torchaudio"), "__file__")
