"""One-stage: guided generation (CFG, STG, modality guidance) at full size.

Runs on the tiny demo model (noise out). Real weights: ltx-2-19b-dev.safetensors and Gemma 3.
"""

import fastltx
from inputs import DEVICE, DTYPE, OUT, SIZE, demo

files = demo()
pipe = fastltx.load_pipeline("one-stage", files.checkpoint, files.text_encoder, device=DEVICE, dtype=DTYPE)
guidance = fastltx.GuiderParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=(1,), rescale_scale=0.7,
                                modality_scale=3.0)  # the tiny model has 2 blocks; LTX-2 uses block 29
result = pipe("a red fox runs through fresh snow at dawn", negative_prompt="blurry, low quality", seed=10,
              steps=8, video_guidance=guidance, **SIZE)
print(result.save(OUT / "one_stage.mp4"), result.timings)
