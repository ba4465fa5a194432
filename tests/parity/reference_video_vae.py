"""The reference's video VAE and latent upsampler, loaded by ltx-core's own builder, for parity tests."""

import torch

from tests.parity.reference import require_reference


def reference_video_encoder(path, dtype):
    require_reference()
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.video_vae import VAE_ENCODER_COMFY_KEYS_FILTER, VideoEncoderConfigurator
    return SingleGPUModelBuilder(model_class_configurator=VideoEncoderConfigurator, model_path=str(path),
                                 model_sd_ops=VAE_ENCODER_COMFY_KEYS_FILTER).build(device=torch.device("cpu"),
                                                                                   dtype=dtype).eval()


def reference_video_decoder(path, dtype):
    require_reference()
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.video_vae import VAE_DECODER_COMFY_KEYS_FILTER, VideoDecoderConfigurator
    return SingleGPUModelBuilder(model_class_configurator=VideoDecoderConfigurator, model_path=str(path),
                                 model_sd_ops=VAE_DECODER_COMFY_KEYS_FILTER).build(device=torch.device("cpu"),
                                                                                   dtype=dtype).eval()


def reference_upsampler(path, dtype):
    require_reference()
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    return SingleGPUModelBuilder(model_class_configurator=LatentUpsamplerConfigurator,
                                 model_path=str(path)).build(device=torch.device("cpu"), dtype=dtype).eval()


def reference_tiling(tiling):
    """fastltx Tiling -> the reference's TilingConfig."""
    from ltx_core.model.video_vae import SpatialTilingConfig, TemporalTilingConfig, TilingConfig
    s, t = tiling.spatial, tiling.temporal
    return TilingConfig(spatial_config=None if s is None else SpatialTilingConfig(s.tile, s.overlap),
                        temporal_config=None if t is None else TemporalTilingConfig(t.tile, t.overlap))
