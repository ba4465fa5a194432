"""Audio-to-video: a video made to match an audio track, which the result carries unchanged.

Runs on the tiny demo model (noise out). Real weights: as two-stage (dev checkpoint, Gemma 3,
upsampler, distilled LoRA); the checkpoint's audio VAE encodes the audio.
"""

import fastltx
from inputs import DEVICE, DTYPE, OUT, SIZE, clip, demo

files = demo()
pipe = fastltx.load_pipeline("a2v", files.checkpoint, files.text_encoder, files.upsampler,
                             distilled_lora=files.stage2_loras[0], device=DEVICE, dtype=DTYPE)
song = clip("song.mp4", seconds=1.5)  # any file PyAV reads with an audio track: wav, mp3, m4a, mp4, ...
result = pipe("a singer on a stage", audio=song, audio_start=0.2, audio_duration=0.8, seed=10, steps=8, **SIZE)
print(result.save(OUT / "a2v.mp4"), result.timings)
