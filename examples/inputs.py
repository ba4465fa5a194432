"""Shared by the examples: the demo model set, a device, and small synthetic inputs (a clip with a
tone, images) so that every example runs on its own. With real weights, pass your own files."""

import sys
from pathlib import Path

import numpy as np
import torch

from fastltx.media.video import write_mp4
from fastltx.pipelines.demo import default_cache, demo_files, demo_ic_lora

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else ".")  # where the examples write (default: here)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32  # float32: the demo on CPU
SIZE = dict(height=128, width=192, num_frames=17, fps=24.0)  # the demo's size: fast anywhere


def demo():
    """The tiny random demo model set (written once to ~/.cache/fastltx): its output is noise."""
    return demo_files(default_cache())


def ic_lora() -> str:
    """The demo set's tiny IC-LoRA (its metadata says reference_downscale_factor 1)."""
    return demo_ic_lora(default_cache())


def clip(name: str = "clip.mp4", frames: int = 17, height: int = 128, width: int = 192, seconds: float = 1.0) -> str:
    """A moving colour gradient at 24 fps with a stereo tone of ``seconds`` at 24 kHz, as an MP4."""
    f, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    video = np.stack([(x * 255 // width + 8 * f) % 256, y * 255 // height, (x + y + 4 * f) % 256], -1)
    t = np.arange(int(seconds * 24000)) / 24000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 660 * t)])
    return str(write_mp4(OUT / name, torch.from_numpy(video.astype(np.uint8)), 24.0,
                         torch.from_numpy(audio).float(), 24000))


def image(name: str, hue: int) -> str:
    """A 128x192 PNG with a soft gradient of the given hue."""
    from PIL import Image

    y, x = np.mgrid[0:128, 0:192]
    rgb = np.stack([(hue + x) % 256, y * 2 % 256, (255 - hue + x // 2) % 256], -1).astype(np.uint8)
    Image.fromarray(rgb).save(OUT / name)
    return str(OUT / name)
