"""Retake: regenerate the span [start, end) seconds of an existing video, keeping the rest.

Runs on the tiny demo model (noise out). Real weights: the dev checkpoint (guided mode) or the
distilled one (distilled=True), and Gemma 3. The source needs 8k+1 frames and sizes that are
multiples of 32.
"""

import fastltx
from inputs import DEVICE, DTYPE, OUT, clip, demo

files = demo()
pipe = fastltx.load_pipeline("retake", files.checkpoint, files.text_encoder, device=DEVICE, dtype=DTYPE)
source = clip("source.mp4", frames=17)  # 17 frames at 24 fps: 0.71 s
result = pipe(source, "the fox jumps", start=0.3, end=0.6, regenerate="both", seed=10, steps=8)
print(result.save(OUT / "retake.mp4"), result.timings)
