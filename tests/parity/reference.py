"""Loading the ltx-core 1.0.0 reference next to fastltx, for parity tests (skipped when absent)."""

import importlib.machinery
import sys
import types

import pytest


def install_torchaudio_stub() -> None:
    """ltx-core's audio modules import torchaudio at module top; it does not load on our torch.

    A stand-in with a module spec lets everything but the reference's mel front end import.
    """
    if "torchaudio" in sys.modules:
        return
    try:
        import torchaudio  # noqa: F401
        return
    except Exception:
        pass
    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    stub.functional = types.ModuleType("torchaudio.functional")
    stub.transforms = types.ModuleType("torchaudio.transforms")
    sys.modules.update({"torchaudio": stub, "torchaudio.functional": stub.functional,
                        "torchaudio.transforms": stub.transforms})


def require_reference():
    install_torchaudio_stub()
    return pytest.importorskip("ltx_core", reason="the reference ltx-core 1.0.0 is not installed")


def reference_transformer(path, dtype, video: bool = True, audio: bool = True):
    """The reference X0Model loaded by the reference's own builder from ``path``."""
    require_reference()
    import torch
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.transformer import LTXModelConfigurator, LTXVideoOnlyModelConfigurator, X0Model
    from ltx_core.model.transformer.model import LTXModel, LTXModelType
    from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP
    from ltx_core.model.transformer.rope import LTXRopeType

    class AudioOnlyConfigurator:
        """ltx-core has no audio-only configurator; build its AudioOnly LTXModel from the same keys."""

        @classmethod
        def from_config(cls, config):
            t = config["transformer"]
            return LTXModel(
                model_type=LTXModelType.AudioOnly, num_layers=t["num_layers"], norm_eps=t["norm_eps"],
                positional_embedding_theta=t["positional_embedding_theta"],
                timestep_scale_multiplier=t["timestep_scale_multiplier"],
                audio_num_attention_heads=t["audio_num_attention_heads"],
                audio_attention_head_dim=t["audio_attention_head_dim"],
                audio_in_channels=t["audio_in_channels"], audio_out_channels=t["audio_out_channels"],
                audio_cross_attention_dim=t["audio_cross_attention_dim"],
                audio_positional_embedding_max_pos=t["audio_positional_embedding_max_pos"],
                rope_type=LTXRopeType(t["rope_type"]),
                double_precision_rope=t.get("frequencies_precision") == "float64",
                apply_gated_attention=t.get("apply_gated_attention", False),
                cross_attention_adaln=t.get("cross_attention_adaln", False),
                audio_caption_projection=None if t.get("caption_proj_before_connector") else _audio_projection(t))

    def _audio_projection(t):
        from ltx_core.model.transformer.text_projection import create_caption_projection
        return create_caption_projection(t, audio=True)

    configurator = {(True, True): LTXModelConfigurator, (True, False): LTXVideoOnlyModelConfigurator,
                    (False, True): AudioOnlyConfigurator}[(video, audio)]
    model = SingleGPUModelBuilder(model_class_configurator=configurator, model_path=str(path),
                                  model_sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP).build(device=torch.device("cpu"),
                                                                                    dtype=dtype)
    return X0Model(model).eval()


def reference_modality(m):
    """fastltx ModalityInput -> the reference's Modality."""
    from ltx_core.model.transformer.modality import Modality
    return Modality(latent=m.latent, sigma=m.sigma, timesteps=m.timesteps, positions=m.positions, context=m.context,
                    enabled=m.enabled, context_mask=m.context_mask, attention_mask=m.attention_mask)


def reference_perturbations(perturbations):
    """fastltx Perturbation list -> the reference's BatchedPerturbationConfig."""
    from ltx_core.guidance.perturbations import (BatchedPerturbationConfig, Perturbation, PerturbationConfig,
                                                 PerturbationType)
    kinds = {"video_self_attn": PerturbationType.SKIP_VIDEO_SELF_ATTN,
             "audio_self_attn": PerturbationType.SKIP_AUDIO_SELF_ATTN,
             "a2v_cross_attn": PerturbationType.SKIP_A2V_CROSS_ATTN,
             "v2a_cross_attn": PerturbationType.SKIP_V2A_CROSS_ATTN}
    return BatchedPerturbationConfig([
        PerturbationConfig([Perturbation(kinds[k.value], None if b is None else list(b)) for k, b in p.skips])
        for p in perturbations])
