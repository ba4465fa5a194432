"""Conditioning items: images at frame 0 (latent replacement) and keyframes (appended tokens)."""
