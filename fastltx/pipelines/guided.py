"""The guided pipelines: one-stage, two-stage (x2 latent upsampling + distilled refinement) and
two-stage HQ (res_2s sampler, distilled LoRA at 0.25 / 0.5)."""

from collections.abc import Sequence
from functools import partial

import torch

from fastltx.conditioning.latents import VideoGrid
from fastltx.pipelines.base import Pipeline
from fastltx.pipelines.defaults import HQ, HQ_STAGE_LORA_STRENGTHS, NEGATIVE_PROMPT, as_schedule, guided_defaults
from fastltx.pipelines.request import ImageInput
from fastltx.pipelines.result import GenerationResult
from fastltx.pipelines.stages import denoise, encode_images, encode_prompts, upsample
from fastltx.sampling.denoisers import GuidedDenoiser, SimpleDenoiser
from fastltx.sampling.guidance import GuidanceSchedule, GuiderParams
from fastltx.sampling.loops import euler_loop, res2s_loop
from fastltx.sampling.schedules import STAGE2_SIGMAS, ltx2_sigmas

Guidance = GuiderParams | GuidanceSchedule | None


class GuidedPipeline(Pipeline):
    """Stage 1 with multimodal guidance (positive and negative prompt); subclasses add stage 2."""

    guidance_passes = 4  # conditional, negative prompt, STG, isolated modality: batched in one forward

    keyframes = False  # every image appended as keyframe tokens, frame 0 included (keyframe interpolation)

    def defaults(self):
        return guided_defaults(self.components.files.checkpoint)

    @torch.inference_mode()
    def __call__(self, prompt: str, negative_prompt: str | None = None, seed: int = 10, height: int | None = None,
                 width: int | None = None, num_frames: int = 121, fps: float = 24.0, steps: int | None = None,
                 video_guidance: Guidance = None, audio_guidance: Guidance = None,
                 images: Sequence[ImageInput] = (), tiling="auto", batched_guidance: bool = True,
                 progress: bool = True) -> GenerationResult:
        """``video_guidance`` / ``audio_guidance``: GuiderParams or a sigma-binned GuidanceSchedule
        (None: the model version's defaults); ``batched_guidance=False`` runs the guidance passes
        one at a time (less memory, same result)."""
        d = self.defaults()
        height = height or (1024 if self.two_stage else 512)
        width = width or (1536 if self.two_stage else 768)
        steps = d.steps if steps is None else steps
        generator = self.start(seed, height, width, num_frames, fps, images, steps)
        c = self.components
        with self.stage("text"):
            text = encode_prompts(c, [prompt, NEGATIVE_PROMPT if negative_prompt is None else negative_prompt])
        pos, neg = text[0], text[1]
        size = (height // 2, width // 2) if self.two_stage else (height, width)
        grid = VideoGrid.for_pixels(num_frames, *size, fps)
        with self.stage("stage 1"):
            guider = GuidedDenoiser(self.stage1_transformer(), (pos.video, neg.video), (pos.audio, neg.audio),
                                    as_schedule(video_guidance or d.video), as_schedule(audio_guidance or d.audio),
                                    batched=batched_guidance)
            video, audio = denoise(c, grid, num_frames, self.stage1_sigmas(steps, grid),
                                   self.loop(guider, progress, "stage 1"), generator,
                                   encode_images(c, images, *size, self.keyframes))
        if not self.two_stage:
            return self.finish(video, audio, generator, fps, tiling)
        with self.stage("upsample"):
            video = upsample(c, video)
        with self.stage("stage 2"):
            full = VideoGrid.for_pixels(num_frames, height, width, fps)
            sigmas = torch.tensor(STAGE2_SIGMAS)
            loop = self.loop(SimpleDenoiser(self.stage2_transformer(), pos.video, pos.audio), progress, "stage 2")
            cond = encode_images(c, images, height, width, self.keyframes)
            video, audio = denoise(c, full, num_frames, sigmas, loop, generator, cond, noise_scale=sigmas[0],
                                   initial_video=video, initial_audio=audio)
        return self.finish(video, audio, generator, fps, tiling)

    # the parts the variants change
    def stage1_transformer(self):
        return self.components.transformer(None)

    def stage2_transformer(self):
        return self.components.transformer(self.components.stage2_strengths)

    def stage1_sigmas(self, steps: int, grid: VideoGrid) -> torch.Tensor:
        return ltx2_sigmas(steps)

    def loop(self, denoiser, progress: bool, desc: str):
        return partial(euler_loop, denoise=denoiser, progress=progress, desc=desc)


class OneStagePipeline(GuidedPipeline):
    name = "one-stage"


class TwoStagePipeline(GuidedPipeline):
    name = "two-stage"
    two_stage = True


class TwoStageHQPipeline(GuidedPipeline):
    """res_2s sampling in both stages; stage 1 uses a token-count-shifted schedule and the distilled
    LoRA at ``stage_lora_strengths[0]``, stage 2 at ``[1]`` (0.25 and 0.5 by default)."""

    name = "two-stage-hq"
    two_stage = True
    stage_lora_strengths = HQ_STAGE_LORA_STRENGTHS

    def defaults(self):
        return HQ

    def stage1_transformer(self):
        return self.components.transformer((self.stage_lora_strengths[0],))

    def stage2_transformer(self):
        return self.components.transformer((self.stage_lora_strengths[1],))

    def stage1_sigmas(self, steps: int, grid: VideoGrid) -> torch.Tensor:
        return ltx2_sigmas(steps, tokens=grid.tokens)

    def loop(self, denoiser, progress: bool, desc: str):
        return partial(res2s_loop, denoise=denoiser, model_dtype=self.components.dtype, progress=progress, desc=desc)
