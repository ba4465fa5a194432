"""Running ltx-pipelines 1.0.0 on CPU next to ours, on the factory's tiny model set.

Test-harness patches around the reference (reference notes 4.1-4.3), not behaviour to copy:
* ``torch.cuda.synchronize`` is a no-op (it raises on a CPU-only torch);
* ``encode_prompts`` runs the reference's own text path (``GemmaTextEncoder.encode`` +
  ``EmbeddingsProcessor``) built directly on the tiny Gemma, since its ledger can only build
  Gemma 3 12B;
* for float32 runs, every ``ltx_pipelines`` module sees a ``torch`` whose ``bfloat16`` is float32
  (the pipelines hard-code bf16), and bf16 defaults bound at import time are rebound.
"""

import contextlib
import sys
import types

import torch

from tests.parity.reference import install_torchaudio_stub


class _Float32Torch(types.ModuleType):
    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


def _pipeline_modules():
    install_torchaudio_stub()
    import ltx_pipelines  # noqa: F401 - imports every pipeline module
    return [m for name, m in sys.modules.items() if name.startswith("ltx_pipelines") and m is not None]


@contextlib.contextmanager
def reference_pipelines(monkeypatch, files, dtype: torch.dtype):
    """Patch the reference for a run in ``dtype`` on the model set ``files`` (a ModelFiles)."""
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessorOutput  # noqa: F401

    from fastltx.models.text_encoder import MAX_LENGTH, read_gemma_directory
    from tests.parity.text_reference import reference_gemma, reference_processor

    modules = _pipeline_modules()
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    if dtype == torch.float32:
        fake = _Float32Torch()
        for m in modules:
            if getattr(m, "torch", None) is torch:
                monkeypatch.setattr(m, "torch", fake)
        from ltx_pipelines.utils import samplers
        kw = dict(samplers.res2s_audio_video_denoising_loop.__kwdefaults__ or {})
        defaults = list(samplers.res2s_audio_video_denoising_loop.__defaults__)
        defaults = [torch.float32 if d is torch.bfloat16 else d for d in defaults]
        monkeypatch.setattr(samplers.res2s_audio_video_denoising_loop, "__defaults__", tuple(defaults))
        if kw:
            monkeypatch.setattr(samplers.res2s_audio_video_denoising_loop, "__kwdefaults__", kw)

    gemma = reference_gemma(files.text_encoder, dtype, MAX_LENGTH)
    processor = reference_processor(files.checkpoint, read_gemma_directory(files.text_encoder).geometry, dtype)

    def encode_prompts(prompts, model_ledger, **_):
        return [processor.process_hidden_states(*gemma.encode(p)) for p in prompts]

    for m in modules:
        if hasattr(m, "encode_prompts"):
            monkeypatch.setattr(m, "encode_prompts", encode_prompts)
    yield


def compare_outputs(ours, ref_video, ref_audio):
    """(max, mean) uint8 frame difference and max audio difference."""
    ref_frames = torch.cat(list(ref_video)) if not isinstance(ref_video, torch.Tensor) else ref_video
    assert ours.video.shape == ref_frames.shape, (ours.video.shape, ref_frames.shape)
    diff = (ours.video.int() - ref_frames.int()).abs().float()
    wave = ref_audio.waveform.float()
    assert ours.audio.shape == wave.shape and ours.sample_rate == ref_audio.sampling_rate
    return diff.max().item(), diff.mean().item(), (ours.audio - wave).abs().max().item()
