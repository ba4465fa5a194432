"""IC-LoRA video-to-video: a video that follows a reference (depth, pose, edges, ...) through an IC-LoRA.

Runs on the tiny demo model and its tiny IC-LoRA (noise out). Real weights: the distilled
checkpoint, Gemma 3, the upsampler and an IC-LoRA file passed as a LoRA.
"""

import fastltx
from inputs import DEVICE, DTYPE, OUT, SIZE, clip, demo, ic_lora

files = demo()
pipe = fastltx.load_pipeline("ic-lora", files.checkpoint, files.text_encoder, files.upsampler,
                             loras=[(ic_lora(), 1.0)], device=DEVICE, dtype=DTYPE)
reference = clip("reference.mp4")  # in real use: a control video with at least num_frames frames at fps
result = pipe("a red fox runs through fresh snow at dawn", video=(reference, 1.0), seed=10,
              attention_strength=0.8, **SIZE)
print(result.save(OUT / "ic_lora.mp4"), result.timings)
