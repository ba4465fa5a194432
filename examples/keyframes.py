"""Keyframe interpolation: a video that passes through each image at its frame (frame 0 included).

Runs on the tiny demo model (noise out). Real weights: as two-stage (dev checkpoint, Gemma 3,
upsampler, distilled LoRA).
"""

import fastltx
from inputs import DEVICE, DTYPE, OUT, SIZE, demo, image

files = demo()
pipe = fastltx.load_pipeline("keyframes", files.checkpoint, files.text_encoder, files.upsampler,
                             distilled_lora=files.stage2_loras[0], device=DEVICE, dtype=DTYPE)
keys = [fastltx.ImageInput(image("start.png", 20), frame=0), fastltx.ImageInput(image("end.png", 200), frame=16)]
result = pipe("the sky turns from dawn to dusk", seed=10, steps=8, images=keys, **SIZE)
print(result.save(OUT / "keyframes.mp4"), result.timings)
