"""Retake: regenerate the span [start, end) seconds of an existing video, keeping everything outside it.

One stage at the source video's size, frame count and frame rate (sizes multiples of 32, 8k+1
frames). The video and its audio track are encoded by the VAEs and used as the initial latents; the
tokens whose time overlaps the span are noised and regenerated, the others are kept. ``regenerate``
says which streams are retaken ("both", "video" or "audio"; the other is kept whole); a source
without an audio track gets its audio generated in full. Guided mode (the dev checkpoint, 40 steps
by default, multimodal guidance with an empty negative prompt as the official retake) or
``distilled=True`` (the distilled checkpoint: its 8 fixed steps, positive prompt only).
"""

from functools import partial

import torch

from fastltx.conditioning.latents import VideoGrid, audio_latent_frames
from fastltx.conditioning.images import load_conditioning_video
from fastltx.conditioning.regions import audio_span, keep_all, video_span
from fastltx.media.audio import Audio, read_audio
from fastltx.media.video_in import VideoInfo, video_info
from fastltx.pipelines.base import Pipeline
from fastltx.pipelines.defaults import RETAKE_STEPS, as_schedule, guided_defaults
from fastltx.pipelines.guided import Guidance
from fastltx.pipelines.request import InputError
from fastltx.pipelines.result import GenerationResult
from fastltx.pipelines.stages import denoise, encode_audio, encode_prompts
from fastltx.sampling.denoisers import GuidedDenoiser, SimpleDenoiser
from fastltx.sampling.loops import euler_loop
from fastltx.sampling.schedules import DISTILLED_SIGMAS, ltx2_sigmas

REGENERATE = ("both", "video", "audio")


class RetakePipeline(Pipeline):
    name = "retake"
    guidance_passes = 4  # guided mode batches up to four passes per step (distilled mode: one)

    @torch.inference_mode()
    def __call__(self, video: str, prompt: str, start: float, end: float, seed: int = 42,
                 negative_prompt: str = "", regenerate: str = "both", distilled: bool = False,
                 steps: int | None = None, video_guidance: Guidance = None, audio_guidance: Guidance = None,
                 tiling="auto", batched_guidance: bool = True, progress: bool = True) -> GenerationResult:
        """``video``: the source file; ``start``/``end``: the span to regenerate, in seconds inside the
        video; ``steps`` and the guidance apply to guided mode (None: 40 steps and the model version's
        guidance defaults)."""
        info = self._check(video, start, end, regenerate)
        source_audio = read_audio(video) if info.has_audio else None
        steps = RETAKE_STEPS if steps is None else steps
        generator = self.start(seed, info.height, info.width, info.frames, info.fps, (), None if distilled else steps)
        c = self.components
        grid = VideoGrid.for_pixels(info.frames, info.height, info.width, info.fps)
        with self.stage("encode"):
            pixels = load_conditioning_video(video, info.height, info.width, info.frames, c.dtype, c.device)
            video_latent = c.video_encoder(pixels)
            audio_latent, audio_conditions = None, ()
            if source_audio is not None:
                audio_latent = self._encode_audio(source_audio, audio_latent_frames(info.frames, info.fps))
                audio_conditions = (partial(audio_span, start=start, end=end) if regenerate != "video" else keep_all,)
        with self.stage("text"):
            text = encode_prompts(c, [prompt] if distilled else [prompt, negative_prompt])
        with self.stage("denoise"):
            model, pos = c.transformer(), text[0]
            if distilled:
                sigmas, denoiser = torch.tensor(DISTILLED_SIGMAS), SimpleDenoiser(model, pos.video, pos.audio)
            else:
                d, neg = guided_defaults(c.files.checkpoint), text[1]
                sigmas = ltx2_sigmas(steps)
                denoiser = GuidedDenoiser(model, (pos.video, neg.video), (pos.audio, neg.audio),
                                          as_schedule(video_guidance or d.video),
                                          as_schedule(audio_guidance or d.audio), batched=batched_guidance)
            span = partial(video_span, start=start, end=end) if regenerate != "audio" else keep_all
            loop = partial(euler_loop, denoise=denoiser, progress=progress, desc="retake")
            video_latent, audio_latent = denoise(c, grid, info.frames, sigmas, loop, generator, (span,),
                                                 initial_video=video_latent, initial_audio=audio_latent,
                                                 audio_conditions=audio_conditions)
        return self.finish(video_latent, audio_latent, generator, info.fps, tiling)

    def _encode_audio(self, source: Audio, frames: int) -> torch.Tensor:
        """The source's audio track encoded (the waveform rounded to the model dtype first, as the
        reference does), trimmed or zero-padded to ``frames`` latent frames."""
        c = self.components
        latent = encode_audio(c, source.waveform.to(c.dtype), source.sample_rate)[:, :, :frames]
        if latent.shape[2] < frames:
            pad = latent.new_zeros(*latent.shape[:2], frames - latent.shape[2], latent.shape[3])
            latent = torch.cat([latent, pad], dim=2)
        return latent

    @staticmethod
    def _check(video: str, start: float, end: float, regenerate: str) -> VideoInfo:
        if regenerate not in REGENERATE:
            raise InputError(f"regenerate must be one of {', '.join(REGENERATE)}, got {regenerate!r}")
        info = video_info(video)
        if (info.frames - 1) % 8:
            raise InputError(f"{video}: retake needs 8k+1 frames (1, 9, 17, ..., 121), the video has {info.frames}")
        if info.height % 32 or info.width % 32:
            raise InputError(f"{video}: retake needs a height and width that are multiples of 32, the video is "
                             f"{info.height}x{info.width}")
        if not 0.0 <= start < end <= info.duration:
            raise InputError(f"the span [{start:g}, {end:g}) s must be non-empty and inside the video's "
                             f"{info.duration:.3f} s")
        return info
