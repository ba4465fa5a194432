"""Shared pieces of the GPU benchmarks: full-size inputs, the reference built on our weights, timing."""

import statistics

import torch

from fastltx.checkpoint.factory import CONNECTOR_19B
from fastltx.models.transformer import ModalityInput
from fastltx.models.transformer.positions import audio_positions, video_positions

# 121 frames at 512x768 and 24 fps: 16 x 16 x 24 = 6,144 video tokens, round(121/24*25) = 126 audio tokens
GRID, AUDIO_TOKENS, TEXT_TOKENS, FPS = (16, 16, 24), 126, 1024, 24.0


def full_size_inputs(cfg, batch: int, device, dtype=torch.bfloat16, seed: int = 0, grid: tuple = GRID):
    """Random latents and text at the 121 x 512 x 768 shape (or another latent ``grid``); video positions
    in bf16 and the timesteps also as levels (no ``torch.unique`` in the forward), as the pipelines
    make them."""
    gen = torch.Generator(device=device).manual_seed(seed)
    sigma = torch.linspace(0.9, 0.3, batch, device=device)
    tokens = grid[0] * grid[1] * grid[2]

    def modality(n, channels, positions, text_dim):
        latent = torch.randn(batch, n, channels, generator=gen, device=device).to(dtype)
        context = torch.randn(batch, TEXT_TOKENS, text_dim, generator=gen, device=device).to(dtype)
        timesteps = sigma.view(-1, 1, 1).expand(batch, n, 1).contiguous()
        levels = (sigma, torch.arange(batch, device=device).view(batch, 1))  # as the denoisers give them
        return ModalityInput(latent, sigma, timesteps, positions, context, timestep_levels=levels)

    text_v = cfg.caption_channels or cfg.video.context_dim
    text_a = cfg.caption_channels or cfg.audio.context_dim
    video = modality(tokens, cfg.video.in_channels, video_positions(*grid, FPS, batch, dtype, device), text_v)
    audio = modality(AUDIO_TOKENS, cfg.audio.in_channels, audio_positions(AUDIO_TOKENS, batch, device), text_a)
    return video, audio


def reference_on_weights(cfg, ours: torch.nn.Module):
    """ltx-core's X0Model sharing our parameter tensors (no second copy of the weights)."""
    from ltx_core.model.transformer import LTXModelConfigurator, X0Model
    config = {"transformer": cfg.to_checkpoint_section(CONNECTOR_19B)}
    with torch.device("meta"):
        ref = LTXModelConfigurator.from_config(config)
    ref.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return X0Model(ref).eval().requires_grad_(False)


def reference_modality(m: ModalityInput):
    from ltx_core.model.transformer.modality import Modality
    return Modality(latent=m.latent, sigma=m.sigma, timesteps=m.timesteps, positions=m.positions, context=m.context)


def rel_l2(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


def time_cuda(fn, warmup: int = 2, reps: int = 7) -> float:
    """Median milliseconds of ``fn()`` timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_mib(fn) -> float:
    """Peak GPU memory above what was allocated before ``fn()``, in MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20
