"""Two-stage HQ: res_2s sampling in both stages, the distilled LoRA at 0.25 (stage 1) and 0.5 (stage 2).

Runs on the tiny demo model (noise out). Real weights: as two-stage (dev checkpoint, Gemma 3,
upsampler, distilled LoRA).
"""

import fastltx
from inputs import DEVICE, DTYPE, OUT, SIZE, demo

files = demo()
pipe = fastltx.load_pipeline("two-stage-hq", files.checkpoint, files.text_encoder, files.upsampler,
                             distilled_lora=files.stage2_loras[0], device=DEVICE, dtype=DTYPE)
result = pipe("a red fox runs through fresh snow at dawn", seed=10, steps=4, **SIZE)
print(result.save(OUT / "two_stage_hq.mp4"), result.timings)
