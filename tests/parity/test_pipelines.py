"""Pipelines end to end against ltx-pipelines 1.0.0 on one tiny V1 model set, same prompt and seed.

Bounds (issue 6): float32 frames max |diff| <= 2 (uint8) and mean <= 0.02, audio max <= 5e-6;
bf16 is a sanity check (frames max <= 24, mean <= 2, audio <= 3e-2), since bf16 rounding is
amplified by the denoising loop and decoders on tiny random models (reference notes 4.3).
"""

import pytest
import torch

from fastltx.pipelines import load_pipeline
from fastltx.sampling.guidance import GuiderParams
from tests.parity.pipeline_reference import compare_outputs, demo_model_set, reference_lora, reference_pipelines
from tests.parity.reference import require_reference

pytestmark = pytest.mark.parity
BOUNDS = {torch.float32: (2, 0.02, 5e-6), torch.bfloat16: (24, 2.0, 3e-2)}
CALL = dict(seed=10, height=128, width=192, num_frames=17, fps=24.0)
# bf16 runs a shorter clip: 9 frames (2 latent frames) at 48 fps, 5 audio latent frames instead of 18.
# PyTorch's bf16 convolutions take a slow path on CPUs without AVX-512, the audio decoder's above all.
CLIP = {torch.float32: dict(num_frames=17, fps=24.0), torch.bfloat16: dict(num_frames=9, fps=48.0)}
PROMPT = "a red fox runs through snow at dawn"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    require_reference()
    return demo_model_set(tmp_path_factory)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_distilled(files, dtype, monkeypatch):
    ours = load_pipeline("distilled", files.checkpoint, files.text_encoder, files.upsampler, device="cpu", dtype=dtype)
    call = {**CALL, **CLIP[dtype]}
    result = ours(PROMPT, tiling=None, progress=False, **call)
    with reference_pipelines(monkeypatch, files, dtype):
        from ltx_pipelines.distilled import DistilledPipeline
        ref = DistilledPipeline(files.checkpoint, None, files.upsampler, loras=[],  # text: patched encode_prompts
                                device=torch.device("cpu"))
        video, audio = ref(prompt=PROMPT, seed=call["seed"], height=call["height"], width=call["width"],
                           num_frames=call["num_frames"], frame_rate=call["fps"], images=[], tiling_config=None)
        vmax, vmean, amax = compare_outputs(result, video, audio)
    print(f"distilled {dtype}: frames max {vmax}, mean {vmean:.4f}; audio max {amax:.2e}")
    bmax, bmean, baudio = BOUNDS[dtype]
    assert vmax <= bmax and vmean <= bmean and amax <= baudio, (vmax, vmean, amax)


# The tiny model has 2 blocks: STG on block 1 (the official block 29 would silently do nothing).
VIDEO = GuiderParams(cfg_scale=3.0, stg_scale=1.0, stg_blocks=(1,), rescale_scale=0.7, modality_scale=3.0)
AUDIO = GuiderParams(cfg_scale=7.0, stg_scale=1.0, stg_blocks=(1,), rescale_scale=0.7, modality_scale=3.0)
NEGATIVE = "blurry, distorted"


def _ref_params(p: GuiderParams):
    from ltx_core.components.guiders import MultiModalGuiderParams
    return MultiModalGuiderParams(cfg_scale=p.cfg_scale, stg_scale=p.stg_scale, stg_blocks=list(p.stg_blocks),
                                  rescale_scale=p.rescale_scale, modality_scale=p.modality_scale,
                                  skip_step=p.skip_step)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["one-stage", "two-stage", "two-stage-hq"])
def test_guided(files, name, dtype, monkeypatch):
    lora_path, _ = files.stage2_loras[0]
    steps = 3 if name == "two-stage-hq" else 4
    size = dict(height=64, width=96) if name == "one-stage" else dict(height=128, width=192)
    ours = load_pipeline(name, files.checkpoint, files.text_encoder, files.upsampler,
                         distilled_lora=None if name == "one-stage" else (lora_path, 0.8), device="cpu", dtype=dtype)
    clip = CLIP[dtype]
    result = ours(PROMPT, NEGATIVE, seed=11, steps=steps, video_guidance=VIDEO, audio_guidance=AUDIO, tiling=None,
                  progress=False, **clip, **size)
    with reference_pipelines(monkeypatch, files, dtype):
        from ltx_pipelines.ti2vid_one_stage import TI2VidOneStagePipeline
        from ltx_pipelines.ti2vid_two_stages import TI2VidTwoStagesPipeline
        from ltx_pipelines.ti2vid_two_stages_hq import TI2VidTwoStagesHQPipeline
        cpu = torch.device("cpu")
        if name == "one-stage":
            ref = TI2VidOneStagePipeline(files.checkpoint, None, loras=[], device=cpu)
        elif name == "two-stage":
            ref = TI2VidTwoStagesPipeline(files.checkpoint, [reference_lora(lora_path, 0.8)], files.upsampler, None,
                                          loras=[], device=cpu)
        else:
            ref = TI2VidTwoStagesHQPipeline(files.checkpoint, [reference_lora(lora_path, 0.8)], 0.25, 0.5,
                                            files.upsampler, None, loras=(), device=cpu)
        kwargs = dict(prompt=PROMPT, negative_prompt=NEGATIVE, seed=11, num_frames=clip["num_frames"],
                      frame_rate=clip["fps"], num_inference_steps=steps, video_guider_params=_ref_params(VIDEO),
                      audio_guider_params=_ref_params(AUDIO), images=[], **size)
        if name != "one-stage":
            kwargs["tiling_config"] = None
        video, audio = ref(**kwargs)
        vmax, vmean, amax = compare_outputs(result, video, audio)
    print(f"{name} {dtype}: frames max {vmax}, mean {vmean:.4f}; audio max {amax:.2e}")
    bmax, bmean, baudio = BOUNDS[dtype]
    assert vmax <= bmax and vmean <= bmean and amax <= baudio, (vmax, vmean, amax)


def test_images_and_lora(files, tmp_path, monkeypatch):
    """Image conditioning at frame 0 (latent replacement) and at frame 9 (appended keyframe), with a
    LoRA at strength 0.5, float32, against the reference's distilled pipeline."""
    from tests.parity.test_images import write_image
    from fastltx.checkpoint.factory import make_lora
    from fastltx.pipelines import ImageInput
    lora = make_lora(tmp_path / "style.safetensors", "v1", seed=5)
    images = [ImageInput(str(write_image(tmp_path / "a.png", 90, 120)), 0, 1.0),
              ImageInput(str(write_image(tmp_path / "b.jpg", 100, 150, seed=1)), 9, 0.8)]
    ours = load_pipeline("distilled", files.checkpoint, files.text_encoder, files.upsampler, loras=[(lora, 0.5)],
                         device="cpu", dtype=torch.float32)
    result = ours(PROMPT, images=images, tiling=None, progress=False, **CALL)
    with reference_pipelines(monkeypatch, files, torch.float32):
        from ltx_pipelines.distilled import DistilledPipeline
        from ltx_pipelines.utils.args import ImageConditioningInput
        ref = DistilledPipeline(files.checkpoint, None, files.upsampler, loras=[reference_lora(lora, 0.5)],
                                device=torch.device("cpu"))
        ref_images = [ImageConditioningInput(i.path, i.frame, i.strength) for i in images]
        video, audio = ref(prompt=PROMPT, seed=CALL["seed"], height=CALL["height"], width=CALL["width"],
                           num_frames=CALL["num_frames"], frame_rate=CALL["fps"], images=ref_images,
                           tiling_config=None)
        vmax, vmean, amax = compare_outputs(result, video, audio)
    print(f"images + LoRA 0.5 float32: frames max {vmax}, mean {vmean:.4f}; audio max {amax:.2e}")
    assert vmax <= 2 and vmean <= 0.02 and amax <= 5e-6, (vmax, vmean, amax)
    plain = load_pipeline("distilled", files.checkpoint, files.text_encoder, files.upsampler, device="cpu",
                          dtype=torch.float32)(PROMPT, tiling=None, progress=False, **CALL)
    assert (plain.video.int() - result.video.int()).abs().float().mean() > 1.0  # images and LoRA matter


def test_batched_guidance_equals_sequential(files):
    pipe = load_pipeline("one-stage", files.checkpoint, files.text_encoder, device="cpu", dtype=torch.float32)
    kw = dict(seed=3, height=64, width=96, num_frames=9, fps=24.0, steps=3, video_guidance=VIDEO,
              audio_guidance=AUDIO, tiling=None, progress=False)
    batched = pipe(PROMPT, NEGATIVE, batched_guidance=True, **kw)
    sequential = pipe(PROMPT, NEGATIVE, batched_guidance=False, **kw)
    diff = (batched.video.int() - sequential.video.int()).abs().float()
    assert diff.max() <= 2 and diff.mean() <= 0.02
    assert (batched.audio - sequential.audio).abs().max() <= 5e-6
