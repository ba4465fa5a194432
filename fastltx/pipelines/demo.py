"""The demo model set: tiny random weights the package writes itself, deterministically.

``fastltx generate`` without weights uses it, so the whole distilled pipeline runs anywhere (CPU
included) in seconds. It generates noise-like video and audio: the weights are random.
"""

import os
from pathlib import Path

from fastltx.pipelines.components import ModelFiles

DEMO_SEED = 0


def demo_files(folder: str | os.PathLike, version: str = "v1") -> ModelFiles:
    """Write (once) and return the tiny model set: checkpoint, Gemma directory, upsampler, distilled LoRA."""
    from fastltx.checkpoint.factory import make_checkpoint, make_lora
    from fastltx.models.text_encoder.tiny import write_gemma
    from fastltx.models.upsampler.tiny import write_upsampler

    folder = Path(folder) / f"demo-{version}"
    files = ModelFiles(checkpoint=str(folder / "checkpoint.safetensors"), text_encoder=str(folder / "gemma"),
                       upsampler=str(folder / "upsampler.safetensors"),
                       stage2_loras=((str(folder / "distilled-lora.safetensors"), 1.0),))
    if not Path(files.checkpoint).exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_gemma(files.text_encoder, seed=DEMO_SEED)
        write_upsampler(files.upsampler, seed=DEMO_SEED)
        make_lora(files.stage2_loras[0][0], version, seed=DEMO_SEED + 1)
        make_checkpoint(files.checkpoint, version, seed=DEMO_SEED)  # last: its presence marks a complete set
    return files


def demo_ic_lora(folder: str | os.PathLike, version: str = "v1") -> str:
    """Write (once) and return a tiny IC-LoRA for the demo set (its metadata says
    reference_downscale_factor 1), for the ic-lora pipeline."""
    from fastltx.checkpoint.factory import make_lora

    path = Path(folder) / f"demo-{version}" / "ic-lora.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make_lora(path, version, seed=DEMO_SEED + 2, metadata={"reference_downscale_factor": "1"})
    return str(path)


def demo_loras(folder: str | os.PathLike, pipeline: str, version: str = "v1") -> list[tuple[str, float]]:
    """The LoRAs a pipeline needs to run on the demo set: the ic-lora pipeline its IC-LoRA."""
    return [(demo_ic_lora(folder, version), 1.0)] if pipeline == "ic-lora" else []


def default_cache() -> Path:
    """Where the demo set lives unless a folder is given: ~/.cache/fastltx."""
    return Path.home() / ".cache" / "fastltx"
