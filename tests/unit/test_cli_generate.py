"""``fastltx generate``: the demo default end to end, an explicit model set, flag wiring by signature,
one-line errors before any model loads, and no partial output when interrupted."""

import os
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import av
import pytest
import torch

import fastltx
import fastltx.pipelines as pipelines
from fastltx.cli import main
from fastltx.media.audio import read_audio
from fastltx.pipelines import GenerationResult, ImageInput, Pipeline
from fastltx.pipelines.demo import demo_files
from fastltx.sampling.guidance import GuiderParams

LOADERS = [("fastltx.models.transformer", "load_transformer"), ("fastltx.models.text_encoder", "load_text_encoder"),
           ("fastltx.models.video_vae", "load_video_encoder"), ("fastltx.models.video_vae", "load_video_decoder"),
           ("fastltx.models.audio_vae", "load_audio_decoder"), ("fastltx.models.vocoder", "load_vocoder"),
           ("fastltx.models.upsampler", "load_latent_upsampler")]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    demo_files(root)  # written once for the module; the runs below find it in place
    return root


@pytest.fixture
def no_model_loads(monkeypatch):
    import importlib

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")
    for module, name in LOADERS:
        monkeypatch.setattr(importlib.import_module(module), name, refuse)


def umask_mode(directory: bool) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def test_demo_writes_an_mp4_with_video_and_audio(tmp_path, demo_root, capsys):
    out = tmp_path / "out.mp4"
    assert main(["generate", "--prompt", "a red fox runs through snow", "-o", str(out),
                 "--demo-dir", str(demo_root)]) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert stdout[0].startswith("no --checkpoint given: running the tiny random demo model")
    assert any(line.startswith("stage 1") for line in stdout) and any(line.startswith("total") for line in stdout)
    assert stdout[-1] == f"wrote {out} (17 frames of 128x192 at 24 fps, stereo audio at 24000 Hz)"
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert (v.height, v.width) == (128, 192) and float(v.average_rate) == 24.0
        assert a.rate == 24000 and a.channels == 2
        assert sum(1 for _ in c.decode(video=0)) == 17
    assert abs(read_audio(out).waveform.shape[1] - 24000 * 17 / 24) < 2048  # AAC priming/padding aside
    assert stat.S_IMODE(out.stat().st_mode) == umask_mode(False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary file left


def test_explicit_model_files_and_lossless_output(tmp_path, demo_root, capsys):
    files = demo_files(demo_root)
    out = tmp_path / "frames"
    assert main(["generate", "--pipeline", "distilled", "--checkpoint", files.checkpoint, "--text-encoder",
                 files.text_encoder, "--upsampler", files.upsampler, "--prompt", "waves", "--height", "64",
                 "--width", "128", "--frames", "9", "--fps", "12", "--seed", "3", "--dtype", "float32",
                 "--device", "cpu", "--no-progress", "--lossless", "-o", str(out)]) == 0
    assert "demo" not in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["audio.wav"] + [f"frame_{i:05d}.png" for i in range(9)]
    with av.open(str(out / "frame_00008.png")) as c:
        assert next(c.decode(video=0)).to_ndarray(format="rgb24").shape == (64, 128, 3)
    audio = read_audio(out / "audio.wav")
    assert audio.sample_rate == 24000 and audio.waveform.shape[0] == 2
    assert abs(audio.waveform.shape[1] - 24000 * 9 / 12) < 1200  # whole audio latent frames
    assert audio.waveform.abs().max() > 0
    assert stat.S_IMODE(out.stat().st_mode) == umask_mode(True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]


# Each case: arguments ({demo}: the demo set's folder, {in}: a folder of inputs), words the one-line error names.
D = "{demo}/demo-v1"
FILES = ["--checkpoint", f"{D}/checkpoint.safetensors", "--text-encoder", f"{D}/gemma"]
BAD = {
    "pipeline name": (["--pipeline", "nope"], "invalid choice: 'nope'"),
    "size (two-stage)": (["--height", "96"], "multiples of 64"),
    "size (one-stage)": (["--pipeline", "one-stage", "--width", "80"], "multiples of 32"),
    "frames": (["--frames", "10"], "8k+1"),
    "fps zero": (["--fps", "0"], "fps must be a positive number"),
    "fps negative": (["--fps", "-24"], "fps must be a positive number"),
    "missing image": (["--image", "{in}/nope.png"], "nope.png: no such image file"),
    "unreadable image": (["--image", "{in}/notes.png:0:0.5"], "notes.png: cannot read the image"),
    "image frame": (["--image", "{in}/red.png:20"], "outside the video's 17 frames"),
    "no upsampler": (FILES, "the distilled pipeline needs a latent upsampler file (--upsampler)"),
    "no distilled LoRA": (["--pipeline", "two-stage", *FILES, "--upsampler", f"{D}/upsampler.safetensors"],
                          "the two-stage pipeline needs the distilled LoRA"),
    "no text encoder": (["--checkpoint", f"{D}/checkpoint.safetensors"], "needs a Gemma 3 text encoder"),
    "missing checkpoint": (["--checkpoint", "{in}/nope.safetensors", "--text-encoder", f"{D}/gemma", "--upsampler",
                            f"{D}/upsampler.safetensors"], "nope.safetensors: no such file"),
    "not a checkpoint": (["--checkpoint", "{in}/notes.png", "--text-encoder", f"{D}/gemma", "--upsampler",
                          f"{D}/upsampler.safetensors"], "notes.png: not a safetensors file"),
    "flag the pipeline lacks": (["--steps", "4"], "the distilled pipeline takes no --steps"),
    "negative prompt for distilled": (["--negative-prompt", "blur"], "takes no --negative-prompt"),
    "upsampler one-stage lacks": (["--pipeline", "one-stage", *FILES, "--upsampler", f"{D}/upsampler.safetensors"],
                                  "the one-stage pipeline uses no --upsampler"),
    "model file without checkpoint": (["--lora", f"{D}/distilled-lora.safetensors"], "--lora needs --checkpoint"),
    "dtype": (["--dtype", "float16"], "invalid choice: 'float16'"),
    "sequence exchange": (["--sequence-exchange", "ring"], "invalid choice: 'ring'"),
    "steps": (["--pipeline", "one-stage", "--steps", "0"], "steps must be at least 1"),
    "cuda graphs without a GPU": (["--cuda-graphs", "--device", "cpu", "--memory", "full"],
                                  "CUDA graphs need a CUDA device and memory 'full' (every model resident), got "
                                  "device cpu and memory 'full'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_before_any_model_loads(case, tmp_path, demo_root, no_model_loads, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.png").write_text("not an image")
    _png(inputs / "red.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args, words = BAD[case]
    args = [a.format(demo=demo_root, **{"in": inputs}) for a in args]
    fresh_demo = tmp_path / "fresh-demo"  # demo-mode cases must fail before writing the demo set
    extra = [] if "--checkpoint" in args else ["--demo-dir", str(fresh_demo)]
    assert main(["generate", "--prompt", "x", "-o", str(out_dir / "o.mp4"), *args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastltx: error: ") and words in err, err
    assert not any(out_dir.iterdir()) and not fresh_demo.exists()


@pytest.mark.parametrize("case", ["missing folder", "folder for mp4", "file for lossless", "prompt"])
def test_bad_output_or_missing_prompt(case, tmp_path, demo_root, no_model_loads, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    args, words = {"missing folder": (["-o", str(tmp_path / "missing" / "o.mp4"), "--prompt", "x"],
                                      "the output folder"),
                   "folder for mp4": (["-o", str(tmp_path / "folder"), "--prompt", "x"], "is a folder"),
                   "file for lossless": (["-o", str(tmp_path / "file"), "--lossless", "--prompt", "x"],
                                         "exists and is not a folder"),
                   "prompt": (["-o", str(tmp_path / "o.mp4")], "the distilled pipeline needs --prompt")}[case]
    assert main(["generate", *args, "--demo-dir", str(demo_root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastltx: error: ") and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"] and not any((tmp_path / "folder").iterdir())


def _png(path, h=32, w=48):
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.height, s.width, s.pix_fmt = h, w, "rgb24"
        frame = torch.zeros(h, w, 3, dtype=torch.uint8)
        frame[..., 0] = 255
        c.mux(s.encode(av.VideoFrame.from_ndarray(frame.numpy(), "rgb24")))
        c.mux(s.encode())


def clip(seed, frames, height, width, fps) -> GenerationResult:
    g = torch.Generator().manual_seed(seed)
    video = (torch.rand(frames, height, width, 3, generator=g) * 255).to(torch.uint8)
    return GenerationResult(video, torch.rand(2, 12000, generator=g) * 2 - 1, 24000, fps, {"stage 1": 0.01})


class FakePipeline(Pipeline):
    """A registry entry whose call records its keywords and returns a small clip at once."""

    calls: list = []
    interrupt = False
    loaded = None  # (files, device, dtype) of the last call's components

    def __call__(self, prompt: str, seed: int = 1, height: int | None = None, width: int = 64, num_frames: int = 9,
                 fps: float = 24.0, steps: int | None = None, images=(), tiling="auto",
                 progress: bool = True) -> GenerationResult:
        FakePipeline.calls.append(dict(prompt=prompt, seed=seed, height=height, width=width, num_frames=num_frames,
                                       fps=fps, steps=steps, images=list(images), progress=progress))
        FakePipeline.loaded = (self.components.files, self.components.device, self.components.dtype)
        FakePipeline.run_settings = (self.components.compile, self.components.fp8, str(self.components.memory.setting))
        if FakePipeline.interrupt:
            os.kill(os.getpid(), signal.SIGTERM)
        return clip(seed, num_frames, height or 64, width, fps)


class OpenPipeline(FakePipeline):
    def __call__(self, prompt: str, **kwargs):  # takes any keyword
        FakePipeline.calls.append(dict(prompt=prompt, **kwargs))
        return clip(1, 9, 64, 64, kwargs.get("fps", 24.0))


@dataclass(frozen=True)
class Clip:
    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> "Clip":  # PATH[:WEIGHT]
        path, _, weight = spec.partition(":")
        return cls(path, float(weight or 1.0))


class Extras(FakePipeline):
    """Keywords beyond the shared ones: each simple one gets a flag from the signature."""

    def __call__(self, prompt: str, reference: str, strength: float = 1.0, count: int | None = None,
                 flip: bool = False, batched: bool = True, clips: Sequence[Clip | str] = (),
                 mask: torch.Tensor | None = None, guidance: GuiderParams | None = None, progress: bool = True):
        FakePipeline.calls.append(dict(prompt=prompt, reference=reference, strength=strength, count=count,
                                       flip=flip, batched=batched, clips=list(clips)))
        return clip(1, 9, 64, 64, 24.0)


@pytest.fixture
def fake(monkeypatch):
    for name, cls, needs in [("fake", FakePipeline, (False, False)), ("open", OpenPipeline, (False, False)),
                             ("extras", Extras, (False, False)), ("dev", FakePipeline, (True, True))]:
        monkeypatch.setitem(pipelines.PIPELINES, name, cls)
        monkeypatch.setitem(pipelines.NEEDS, name, needs)
    monkeypatch.setattr(FakePipeline, "calls", [])
    monkeypatch.setattr(FakePipeline, "interrupt", False)
    monkeypatch.setattr(FakePipeline, "loaded", None)
    return FakePipeline


def test_flags_follow_the_pipeline_signature(tmp_path, demo_root, fake, no_model_loads, capsys):
    _png(tmp_path / "a.png")
    run = ["generate", "--demo-dir", str(demo_root), "--prompt", "p", "--no-progress"]
    assert main([*run, "--pipeline", "fake", "--steps", "3", "--image", f"{tmp_path / 'a.png'}:8:0.5", "--width", "96",
                 "--seed", "5", "-o", str(tmp_path / "o.mp4")]) == 0
    # demo defaults fill what the user left out (height, frames) where the pipeline takes them; flags win
    assert fake.calls.pop() == dict(prompt="p", seed=5, height=128, width=96, num_frames=17, fps=24.0, steps=3,
                                    images=[ImageInput(str(tmp_path / "a.png"), 8, 0.5)], progress=False)
    assert main([*run, "--pipeline", "fake", "--negative-prompt", "n", "-o", str(tmp_path / "o2.mp4")]) == 2
    assert capsys.readouterr().err == "fastltx: error: the fake pipeline takes no --negative-prompt\n"
    assert main([*run[:-1], "--pipeline", "extras", "-o", str(tmp_path / "o2.mp4")]) == 2
    assert capsys.readouterr().err == "fastltx: error: the extras pipeline needs --reference\n"
    assert main([*run[:-1], "--pipeline", "extras", "--mask", "m.png", "-o", str(tmp_path / "o2.mp4")]) == 2
    assert "unrecognized arguments: --mask" in capsys.readouterr().err  # a tensor keyword has no flag
    assert main([*run[:-1], "--pipeline", "fake", "--reference", "r", "-o", str(tmp_path / "o2.mp4")]) == 2
    assert capsys.readouterr().err == "fastltx: error: the fake pipeline takes no --reference\n"
    assert not (tmp_path / "o2.mp4").exists()
    assert main([*run, "--pipeline", "open", "--negative-prompt", "n", "--fps", "12",
                 "-o", str(tmp_path / "o3.mp4")]) == 0
    assert fake.calls.pop() == dict(prompt="p", negative_prompt="n", fps=12.0, progress=False)  # no demo sizes known
    assert main([*run[:-1], "--pipeline", "extras", "--reference", "r.mp4", "--strength", "0.5", "--count", "3",
                 "--flip", "--no-batched", "--clips", "a.mp4:0.5", "--clips", "b.mp4",
                 "-o", str(tmp_path / "o4.mp4")]) == 0
    assert fake.calls.pop() == dict(prompt="p", reference="r.mp4", strength=0.5, count=3, flip=True, batched=False,
                                    clips=[Clip("a.mp4", 0.5), Clip("b.mp4", 1.0)])


def test_model_file_flags_reach_the_pipeline(tmp_path, demo_root, fake, no_model_loads):
    files = demo_files(demo_root)
    lora = files.stage2_loras[0][0]
    assert main(["generate", "--pipeline", "dev", "--checkpoint", files.checkpoint, "--text-encoder",
                 files.text_encoder, "--upsampler", files.upsampler, "--distilled-lora", f"{lora}:0.8", "--lora", lora,
                 "--lora", f"{lora}:0.5", "--device", "cpu", "--prompt", "p", "-o", str(tmp_path / "o.mp4")]) == 0
    loaded, device, dtype = fake.loaded
    assert (loaded.checkpoint, loaded.text_encoder, loaded.upsampler) == (files.checkpoint, files.text_encoder,
                                                                          files.upsampler)
    assert loaded.stage2_loras == ((lora, 0.8),) and loaded.loras == ((lora, 1.0), (lora, 0.5))
    assert device == torch.device("cpu") and dtype == torch.bfloat16  # real weights: bf16 unless asked
    assert fake.calls.pop()["height"] is None  # no demo sizes with real weights: the pipeline's defaults
    assert fake.run_settings == (False, False, "auto")
    assert main(["generate", "--pipeline", "fake", "--checkpoint", files.checkpoint, "--text-encoder",
                 files.text_encoder, "--device", "cpu", "--prompt", "p", "--compile", "--fp8", "--memory", "16g",
                 "-o", str(tmp_path / "o2.mp4")]) == 0
    assert fake.run_settings == (True, True, "16g")


def test_interrupted_runs_leave_no_output(tmp_path, demo_root, fake, no_model_loads, monkeypatch, capsys):
    import fastltx.media.video as video
    import fastltx.pipelines.result as result

    out = tmp_path / "out"
    out.mkdir()
    before = signal.getsignal(signal.SIGTERM)
    run = ["generate", "--pipeline", "fake", "--demo-dir", str(demo_root), "--prompt", "p"]

    def stop(*args, **kwargs):  # every video frame muxed, the audio not yet
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(video, "_encode_audio", stop)
        assert main([*run, "-o", str(out / "o.mp4")]) == 130
    write = result.write_lossless

    def partial(folder, frames, audio, rate):  # two frames written, then Ctrl-C
        write(folder, frames[:2])
        raise KeyboardInterrupt
    with monkeypatch.context() as m:
        m.setattr(result, "write_lossless", partial)
        assert main([*run, "--lossless", "-o", str(out / "frames")]) == 130
    fake.interrupt = True  # SIGTERM during the run unwinds the same way
    assert main([*run, "-o", str(out / "o.mp4")]) == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is main()'s only while it runs
    assert capsys.readouterr().err.count("fastltx: interrupted\n") == 3
    assert list(out.iterdir()) == []


def test_public_api_and_light_import():
    assert fastltx.load_pipeline is pipelines.load_pipeline and fastltx.GenerationResult is GenerationResult
    assert fastltx.ImageInput is ImageInput and fastltx.InputError is pipelines.InputError
    from fastltx.sampling.guidance import GuiderParams
    assert fastltx.GuiderParams is GuiderParams
    code = "import sys, fastltx; print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'av'}))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
