"""Distilled: text (and optional images) to video with audio in 8 + 3 steps, no guidance.

Runs on the tiny demo model (noise out). Real weights: ltx-2-19b-distilled.safetensors, Gemma 3,
the x2 spatial upsampler (see docs/usage.md).
"""

import fastltx
from inputs import DEVICE, DTYPE, OUT, SIZE, demo, image

files = demo()
pipe = fastltx.load_pipeline("distilled", files.checkpoint, files.text_encoder, files.upsampler,
                             device=DEVICE, dtype=DTYPE)
first = fastltx.ImageInput(image("first.png", 30), frame=0, strength=1.0)
result = pipe("a red fox runs through fresh snow at dawn", seed=10, images=[first], **SIZE)
print(result.save(OUT / "distilled.mp4"), result.timings)
