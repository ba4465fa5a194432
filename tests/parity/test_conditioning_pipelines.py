"""The conditioning pipelines (IC-LoRA, keyframes, audio-to-video, retake) end to end against their
ltx-pipelines 1.0.0 counterparts on the tiny V1 model set, with input videos and audio written here.

Bounds as in test_pipelines.py (issue 6): float32 frames max |diff| <= 2 (uint8) and mean <= 0.02,
audio max <= 5e-6; bf16 as a sanity bound (24 / 2 / 3e-2). The reference's audio front end needs
torchaudio (absent here): both sides get the same log mel, computed by ours (its parity with the
reference's is tested in test_mel.py), by replacing the reference's ``vae_encode_audio``.

Some bf16 cases run on fewer pixels or shorter audio than their float32 twins: PyTorch's bf16
convolutions take a slow path on CPUs without AVX-512 (the VAE encoders' and audio decoder's above all).
"""

import numpy as np
import pytest
import torch

from fastltx.pipelines import ImageInput, VideoInput, load_pipeline
from tests.parity.pipeline_reference import compare_outputs, demo_model_set, reference_lora, reference_pipelines
from tests.parity.reference import require_reference
from tests.parity.test_pipelines import AUDIO, BOUNDS, NEGATIVE, PROMPT, VIDEO, _ref_params

pytestmark = pytest.mark.parity


def _check(name, dtype, ours, video, audio):
    vmax, vmean, amax = compare_outputs(ours, video, audio)
    print(f"{name} {dtype}: frames max {vmax}, mean {vmean:.4f}; audio max {amax:.2e}")
    bmax, bmean, baudio = BOUNDS[dtype]
    assert vmax <= bmax and vmean <= bmean and amax <= baudio, (vmax, vmean, amax)


def tone(seconds: float, rate: int) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return torch.stack([0.3 * torch.sin(2 * np.pi * 440 * t) + 0.1 * torch.sin(2 * np.pi * 3000 * t),
                        0.2 * torch.sin(2 * np.pi * 150 * t + 1)])


def clip(frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Smooth moving gradients with a little noise (uint8 (F, H, W, 3))."""
    f, y, x = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij")
    base = torch.stack([(x * 255 // width + 9 * f), (y * 255 // height), ((x + y + 5 * f) % 256)], -1)
    noise = torch.randint(-20, 20, base.shape, generator=torch.Generator().manual_seed(seed))
    return (base + noise).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from fastltx.checkpoint.factory import make_lora
    from fastltx.media.video import write_mp4
    from tests.parity.test_images import write_image
    require_reference()
    root = tmp_path_factory.mktemp("media")
    return {
        "models": demo_model_set(tmp_path_factory),
        "reference": write_mp4(root / "depth.mp4", clip(12, 80, 120, 0), 24.0),  # more frames than asked for
        "reference_48": write_mp4(root / "depth48.mp4", clip(12, 80, 120, 0), 48.0),
        "source": write_mp4(root / "source.mp4", clip(9, 64, 96, 1), 24.0, tone(9 / 24, 24000), 24000),
        "short_source": write_mp4(root / "short.mp4", clip(9, 64, 64, 1), 48.0, tone(9 / 48, 24000), 24000),
        "song": write_mp4(root / "song.mp4", clip(30, 32, 32, 2), 24.0, tone(1.2, 22050), 22050),
        "ic_lora": make_lora(root / "ic.safetensors", "v1", seed=7, metadata={"reference_downscale_factor": "2"}),
        "first": write_image(root / "first.png", 90, 120),
        "last": write_image(root / "last.jpg", 100, 150, seed=1),
    }


def _same_mel(monkeypatch, module, checkpoint):
    """The reference module's ``vae_encode_audio`` with our log mel in place of its torchaudio front end."""
    from fastltx.checkpoint.safetensors_file import read_header
    from fastltx.models.audio_vae import AudioVAEConfig, waveform_to_mel
    header = read_header(checkpoint)
    cfg = AudioVAEConfig.from_checkpoint_config(header.config(), header.path)

    def encode(audio, audio_encoder, audio_processor=None):
        param = next(audio_encoder.parameters())
        mel = waveform_to_mel(audio.waveform, audio.sampling_rate, cfg).to(audio.waveform.dtype)
        return audio_encoder(mel.to(device=param.device, dtype=param.dtype))

    monkeypatch.setattr(module, "vae_encode_audio", encode)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ic_lora(media, dtype, monkeypatch):
    """Reference video at stage-1 size / 2 (the LoRA's metadata); float32 with a pixel attention mask
    and strength 0.7, bf16 with a scalar attention strength 0.5 (and at 48 fps: 5 audio latent frames)."""
    files, lora = media["models"], media["ic_lora"]
    fps, reference = (24.0, str(media["reference"])) if dtype == torch.float32 else (48.0, str(media["reference_48"]))
    size = dict(seed=12, height=128, width=256, num_frames=9, fps=fps)
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(1, 1, 9, 64, 128, generator=gen) if dtype == torch.float32 else None
    strength = 0.7 if dtype == torch.float32 else 0.5
    ours = load_pipeline("ic-lora", files.checkpoint, files.text_encoder, files.upsampler, loras=[(lora, 0.9)],
                         device="cpu", dtype=dtype)
    result = ours(PROMPT, [VideoInput(reference, 0.95)], attention_strength=strength,
                  attention_mask=mask, tiling=None, progress=False, **size)
    with reference_pipelines(monkeypatch, files, dtype):
        from ltx_pipelines.ic_lora import ICLoraPipeline
        ref = ICLoraPipeline(files.checkpoint, files.upsampler, None, [reference_lora(lora, 0.9)],
                             device=torch.device("cpu"))
        video, audio = ref(prompt=PROMPT, seed=12, height=128, width=256, num_frames=9, frame_rate=fps, images=[],
                           video_conditioning=[(reference, 0.95)], tiling_config=None,
                           conditioning_attention_strength=strength, conditioning_attention_mask=mask)
        _check("ic-lora", dtype, result, video, audio)


def test_ic_lora_skip_stage_2(media, monkeypatch):
    files, lora = media["models"], media["ic_lora"]
    ours = load_pipeline("ic-lora", files.checkpoint, files.text_encoder, files.upsampler, loras=[(lora, 1.0)],
                         device="cpu", dtype=torch.float32)
    image = ImageInput(str(media["first"]), 0, 1.0)
    result = ours(PROMPT, [str(media["reference"])], seed=5, height=128, width=128, num_frames=9, images=[image],
                  skip_stage_2=True, tiling=None, progress=False)
    assert result.video.shape == (9, 64, 64, 3)
    with reference_pipelines(monkeypatch, files, torch.float32):
        from ltx_pipelines.ic_lora import ICLoraPipeline
        from ltx_pipelines.utils.args import ImageConditioningInput
        ref = ICLoraPipeline(files.checkpoint, files.upsampler, None, [reference_lora(lora, 1.0)],
                             device=torch.device("cpu"))
        video, audio = ref(prompt=PROMPT, seed=5, height=128, width=128, num_frames=9, frame_rate=24.0,
                           images=[ImageConditioningInput(image.path, 0, 1.0)],
                           video_conditioning=[(str(media["reference"]), 1.0)], tiling_config=None, skip_stage_2=True)
        _check("ic-lora skip stage 2", torch.float32, result, video, audio)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keyframes(media, dtype, monkeypatch):
    files = media["models"]
    lora_path, _ = files.stage2_loras[0]
    images = [ImageInput(str(media["first"]), 0, 1.0), ImageInput(str(media["last"]), 8, 0.9)]
    kw = dict(seed=11, height=128, width=128, num_frames=9, fps=24.0, steps=3)
    if dtype == torch.bfloat16:  # a quarter of the pixels, 5 audio latent frames, not 9 (see the top)
        kw.update(height=64, width=64, fps=48.0)
    ours = load_pipeline("keyframes", files.checkpoint, files.text_encoder, files.upsampler,
                         distilled_lora=(lora_path, 0.8), device="cpu", dtype=dtype)
    result = ours(PROMPT, NEGATIVE, video_guidance=VIDEO, audio_guidance=AUDIO, images=images, tiling=None,
                  progress=False, **kw)
    with reference_pipelines(monkeypatch, files, dtype):
        from ltx_pipelines.keyframe_interpolation import KeyframeInterpolationPipeline
        from ltx_pipelines.utils.args import ImageConditioningInput
        ref = KeyframeInterpolationPipeline(files.checkpoint, [reference_lora(lora_path, 0.8)], files.upsampler, None,
                                            loras=[], device=torch.device("cpu"))
        video, audio = ref(prompt=PROMPT, negative_prompt=NEGATIVE, seed=11, height=kw["height"], width=kw["width"],
                           num_frames=9, frame_rate=kw["fps"], num_inference_steps=3,
                           video_guider_params=_ref_params(VIDEO), audio_guider_params=_ref_params(AUDIO),
                           tiling_config=None,
                           images=[ImageConditioningInput(i.path, i.frame, i.strength) for i in images])
        _check("keyframes", dtype, result, video, audio)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a2v(media, dtype, monkeypatch):
    """Audio from an MP4 at 22.05 kHz, from 0.1 s for 0.6 s; the output carries that excerpt."""
    files = media["models"]
    lora_path, _ = files.stage2_loras[0]
    kw = dict(seed=13, height=128, width=128, num_frames=9, fps=24.0, steps=3)
    ours = load_pipeline("a2v", files.checkpoint, files.text_encoder, files.upsampler, distilled_lora=(lora_path, 0.8),
                         device="cpu", dtype=dtype)
    result = ours(PROMPT, str(media["song"]), NEGATIVE, audio_start=0.1, audio_duration=0.6, video_guidance=VIDEO,
                  tiling=None, progress=False, **kw)
    with reference_pipelines(monkeypatch, files, dtype):
        import ltx_pipelines.a2vid_two_stage as a2vid
        _same_mel(monkeypatch, a2vid, files.checkpoint)
        ref = a2vid.A2VidPipelineTwoStage(files.checkpoint, [reference_lora(lora_path, 0.8)], files.upsampler, None,
                                          loras=[], device=torch.device("cpu"))
        video, audio = ref(prompt=PROMPT, negative_prompt=NEGATIVE, seed=13, height=128, width=128, num_frames=9,
                           frame_rate=24.0, num_inference_steps=3, video_guider_params=_ref_params(VIDEO), images=[],
                           audio_path=str(media["song"]), audio_start_time=0.1, audio_max_duration=0.6,
                           tiling_config=None)
        assert audio.waveform.shape == (2, round(0.6 * 22050))
        _check("a2v", dtype, result, video, audio)


@pytest.mark.parametrize("dtype,distilled,regenerate", [(torch.float32, False, "both"), (torch.float32, True, "video"),
                                                        (torch.bfloat16, False, "audio")])
def test_retake(media, dtype, distilled, regenerate, monkeypatch):
    """Regenerate [0.2, 0.3) s of a 9-frame 64x96 video at 24 fps with 24 kHz AAC audio (bf16: [0.1, 0.15) s
    of a 64x64 one at 48 fps) (video: the second latent frame; audio: the tokens overlapping the span)."""
    files = media["models"]
    source, start, end = (str(media["source"]), 0.2, 0.3) if dtype == torch.float32 else \
        (str(media["short_source"]), 0.1, 0.15)
    ours = load_pipeline("retake", files.checkpoint, files.text_encoder, device="cpu", dtype=dtype)
    result = ours(source, PROMPT, start, end, seed=14, negative_prompt=NEGATIVE, regenerate=regenerate,
                  distilled=distilled, steps=3, video_guidance=VIDEO, audio_guidance=AUDIO, tiling=None,
                  progress=False)
    with reference_pipelines(monkeypatch, files, dtype):
        import ltx_pipelines.retake as retake
        _same_mel(monkeypatch, retake, files.checkpoint)
        ref = retake.RetakePipeline(files.checkpoint, None, loras=[], device=torch.device("cpu"))
        video, audio = ref(source, PROMPT, start, end, 14, negative_prompt=NEGATIVE,
                           num_inference_steps=3, video_guider_params=_ref_params(VIDEO),
                           audio_guider_params=_ref_params(AUDIO), regenerate_video=regenerate != "audio",
                           regenerate_audio=regenerate != "video", distilled=distilled, tiling_config=None)
        _check(f"retake {regenerate}{' distilled' if distilled else ''}", dtype, result, video, audio)
