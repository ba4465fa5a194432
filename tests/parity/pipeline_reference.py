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
    import importlib
    import pkgutil

    import ltx_pipelines
    for info in pkgutil.walk_packages(ltx_pipelines.__path__, "ltx_pipelines."):  # every module, patched alike
        importlib.import_module(info.name)
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
        _float32_loras(monkeypatch)

    gemma = reference_gemma(files.text_encoder, dtype, MAX_LENGTH)
    processor = reference_processor(files.checkpoint, read_gemma_directory(files.text_encoder).geometry, dtype)

    def encode_prompts(prompts, model_ledger, **_):
        return [processor.process_hidden_states(*gemma.encode(p)) for p in prompts]

    for m in modules:
        if hasattr(m, "encode_prompts"):
            monkeypatch.setattr(m, "encode_prompts", encode_prompts)
    yield


def _float32_loras(monkeypatch):
    """The reference forms LoRA products from the file's bf16 tensors in bf16, and its LoRA path
    leaves untouched weights in bf16: form the products in float32 and cast the built model."""
    import ltx_core.loader.fuse_loras as fl
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    prepare, build = fl._prepare_deltas, SingleGPUModelBuilder.build

    def deltas_in_float32(lora_sds, key, dtype, device):
        up = [LoraStateDictWithStrength(StateDict({k: v.float() for k, v in l.sd.items()}, l.device, l.size,
                                                  {torch.float32}), s) for l, s in lora_sds]
        return prepare(up, key, dtype, device)

    def build_cast(self, device=None, dtype=None):
        model = build(self, device=device, dtype=dtype)
        return model.to(dtype) if dtype is not None else model

    monkeypatch.setattr(fl, "_prepare_deltas", deltas_in_float32)
    monkeypatch.setattr(SingleGPUModelBuilder, "build", build_cast)


def demo_model_set(tmp_path_factory):
    """The tiny V1 demo model set, written once per test session and shared by the pipeline tests."""
    from fastltx.pipelines.demo import demo_files
    return demo_files(tmp_path_factory.getbasetemp() / "demo-models")


def reference_lora(path: str, strength: float):
    from ltx_core.loader.primitives import LoraPathStrengthAndSDOps
    from ltx_core.loader.sd_ops import LTXV_LORA_COMFY_RENAMING_MAP
    return LoraPathStrengthAndSDOps(str(path), strength, LTXV_LORA_COMFY_RENAMING_MAP)


def compare_outputs(ours, ref_video, ref_audio):
    """(max, mean) uint8 frame difference and max audio difference."""
    with torch.inference_mode():  # the reference decodes lazily, from inference tensors
        ref_frames = torch.cat(list(ref_video)) if not isinstance(ref_video, torch.Tensor) else ref_video
    assert ours.video.shape == ref_frames.shape, (ours.video.shape, ref_frames.shape)
    diff = (ours.video.int() - ref_frames.int()).abs().float()
    wave = ref_audio.waveform.float()
    assert ours.audio.shape == wave.shape and ours.sample_rate == ref_audio.sampling_rate
    return diff.max().item(), diff.mean().item(), (ours.audio - wave).abs().max().item()
