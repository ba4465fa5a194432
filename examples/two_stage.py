"""Two-stage: guided generation at half size, x2 latent upsampling, 3 steps with the distilled LoRA.

Runs on the tiny demo model (noise out). Real weights: ltx-2-19b-dev.safetensors, Gemma 3, the x2
spatial upsampler and the distilled LoRA.
"""

import fastltx
from inputs import DEVICE, DTYPE, OUT, SIZE, demo

files = demo()
pipe = fastltx.load_pipeline("two-stage", files.checkpoint, files.text_encoder, files.upsampler,
                             distilled_lora=files.stage2_loras[0], device=DEVICE, dtype=DTYPE)
result = pipe("a red fox runs through fresh snow at dawn", seed=10, steps=8, **SIZE)
print(result.save(OUT / "two_stage.mp4"), result.timings)
