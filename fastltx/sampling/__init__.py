"""Sampling: sigma schedules, noising, diffusion steps, multimodal guidance and denoising loops."""
