"""Audio-to-video: a video generated to match a given audio track, which is returned unchanged.

The audio (any file PyAV reads, from ``audio_start`` seconds for at most ``audio_duration``) is
encoded by the audio VAE (the whole excerpt, then trimmed to the clip's length) and kept frozen in
both stages: its tokens are never noised nor updated, only attended to. Stage 1 is guided for the
video (positive and negative prompt); the audio stream gets no guidance and its positive text only.
Stage 2 is the usual x2 upsampling and 3 distilled steps with the distilled LoRA.
"""

from collections.abc import Sequence

import torch

from fastltx.conditioning.latents import VideoGrid, audio_latent_frames
from fastltx.conditioning.regions import keep_all
from fastltx.media.audio import read_audio
from fastltx.models.audio_vae.mel import latent_frames
from fastltx.pipelines.defaults import NEGATIVE_PROMPT, as_schedule
from fastltx.pipelines.guided import Guidance, TwoStagePipeline
from fastltx.pipelines.request import ImageInput, InputError
from fastltx.pipelines.result import GenerationResult
from fastltx.pipelines.stages import denoise, encode_audio, encode_images, encode_prompts
from fastltx.sampling.denoisers import GuidedDenoiser, SimpleDenoiser
from fastltx.sampling.guidance import GuidanceSchedule


class AudioToVideoPipeline(TwoStagePipeline):
    name = "a2v"

    @torch.inference_mode()
    def __call__(self, prompt: str, audio: str, negative_prompt: str | None = None, seed: int = 10,
                 height: int = 1024, width: int = 1536, num_frames: int = 121, fps: float = 24.0,
                 steps: int | None = None, audio_start: float = 0.0, audio_duration: float | None = None,
                 video_guidance: Guidance = None, images: Sequence[ImageInput] = (), tiling="auto",
                 batched_guidance: bool = True, progress: bool = True) -> GenerationResult:
        """``audio``: a file with an audio track covering the clip (``num_frames`` / ``fps`` seconds from
        ``audio_start``; a longer track is encoded whole and trimmed to the clip after encoding, so
        bound it with ``audio_duration``); the result carries the excerpt read, at its own sample rate."""
        d = self.defaults()
        steps = d.steps if steps is None else steps
        source = self._read(audio, audio_start, audio_duration, num_frames, fps)
        generator = self.start(seed, height, width, num_frames, fps, images, steps)
        c = self.components
        with self.stage("text"):
            text = encode_prompts(c, [prompt, NEGATIVE_PROMPT if negative_prompt is None else negative_prompt])
        pos, neg = text[0], text[1]
        with self.stage("audio"):
            audio_latent = encode_audio(c, source.waveform, source.sample_rate)
            audio_latent = audio_latent[:, :, :audio_latent_frames(num_frames, fps)]
        frozen = (keep_all,)
        with self.stage("stage 1"):
            half = VideoGrid.for_pixels(num_frames, height // 2, width // 2, fps)
            guider = GuidedDenoiser(self.stage1_transformer(), (pos.video, neg.video), (pos.audio, None),
                                    as_schedule(video_guidance or d.video), GuidanceSchedule(),
                                    batched=batched_guidance)
            video, _ = denoise(c, half, num_frames, self.stage1_sigmas(steps, half),
                               self.loop(guider, progress, "stage 1"), generator,
                               encode_images(c, images, height // 2, width // 2), initial_audio=audio_latent,
                               audio_conditions=frozen)
        video, _ = self.refine(video, audio_latent, height, width, num_frames, fps,
                               SimpleDenoiser(self.stage2_transformer(), pos.video, pos.audio), generator, images,
                               progress, audio_conditions=frozen)
        return self.finish(video, None, generator, fps, tiling, audio=source)

    def _read(self, path: str, start: float, duration: float | None, num_frames: int, fps: float):
        """The audio excerpt, refused when it is too short to cover the clip's audio latent frames."""
        if start < 0 or (duration is not None and duration <= 0):
            raise InputError(f"audio_start must be >= 0 and audio_duration > 0, got {start} and {duration}")
        source = read_audio(path, start, duration)
        samples = source.waveform.shape[-1]
        if latent_frames(samples, source.sample_rate, self.components.audio_config) < audio_latent_frames(
                num_frames, fps):
            raise InputError(f"{path}: {samples / source.sample_rate:.3f} s of audio from {start:g} s, shorter than "
                             f"the clip's {num_frames / fps:.3f} s (fewer frames, a higher fps or another audio_start)")
        return source
