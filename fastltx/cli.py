"""The ``fastltx`` command line: generate videos, inspect checkpoints, write tiny random checkpoints.

``generate`` wires its flags to the chosen pipeline's ``__call__`` by inspecting its signature: a
flag is accepted only where the pipeline takes the matching keyword, so a new pipeline in the
registry works here without changes. Every check runs before any model loads; all bad input ends
with one line ``fastltx: error: ...`` and exit status 2.
"""

import argparse
import inspect
import os
import signal
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastltx.checkpoint.safetensors_file import CheckpointError
from fastltx.conditioning.items import ConditioningError
from fastltx.layers.sequence_parallel import EXCHANGES
from fastltx.media.errors import MediaError
from fastltx.pipelines.request import ImageInput, InputError
from fastltx.runtime.memory import OutOfMemory, parse_memory

USER_ERRORS = (CheckpointError, ConditioningError, InputError, MediaError, OutOfMemory)


@dataclass(frozen=True)
class CallFlag:
    """A ``generate`` flag that feeds the pipeline call's keyword ``keyword``."""

    dest: str
    keyword: str
    flag: str
    parse: Callable | None = None  # applied to each value of a repeatable flag


# The flags every pipeline shares, by their command-line names. Other keywords of the registered
# pipelines get flags from their signatures (``signature_flags``).
FIXED_FLAGS = [CallFlag("prompt", "prompt", "--prompt"), CallFlag("negative_prompt", "negative_prompt",
                                                                     "--negative-prompt"),
               CallFlag("seed", "seed", "--seed"), CallFlag("height", "height", "--height"),
               CallFlag("width", "width", "--width"), CallFlag("frames", "num_frames", "--frames"),
               CallFlag("fps", "fps", "--fps"), CallFlag("steps", "steps", "--steps"),
               CallFlag("image", "images", "--image", ImageInput.parse),
               CallFlag("progress", "progress", "--no-progress")]
NO_FLAG = {"tiling", "video_guidance", "audio_guidance"}  # keywords with no command-line form
# The demo's call defaults (tiny model on CPU, well under a minute); explicit flags win.
DEMO_CALL = {"height": 128, "width": 192, "num_frames": 17, "steps": 8}


class UsageError(Exception):
    """Bad command-line syntax (argparse's complaints), reported as one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block; main() turns it into exit status 2
        raise UsageError(message)


def _inspect(args) -> None:
    from fastltx.checkpoint.inspect import inspect_checkpoint
    print(inspect_checkpoint(args.path))


def _tiny(args) -> None:
    from fastltx.checkpoint.factory import make_checkpoint
    path = make_checkpoint(args.path, version=args.version, seed=args.seed, num_layers=args.layers)
    print(f"wrote a random {args.version} checkpoint to {path}")


# ---------------------------------------------------------------------------------------------- generate


def _path_strength(spec: str) -> tuple[str, float]:
    """``PATH[:STRENGTH]`` (without a number after the last ':', the whole spec is the path)."""
    path, sep, last = spec.rpartition(":")
    try:
        return (path, float(last)) if sep and path else (spec, 1.0)
    except ValueError:
        return spec, 1.0


def _call_keywords(cls) -> tuple[dict[str, inspect.Parameter], bool]:
    """The keyword parameters of ``cls.__call__`` and whether it takes ``**kwargs``."""
    params = list(inspect.signature(cls.__call__).parameters.values())[1:]  # without self
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def _members(annotation) -> list:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _flag_form(annotation, default) -> dict | None:
    """argparse keywords for a call keyword of this annotation and default; None when the command
    line cannot give it (tensors, guidance objects, ...)."""
    members = [typing.get_origin(m) or m for m in _members(annotation)]
    if members == [bool]:
        return None if default is inspect.Parameter.empty else dict(action="store_const", const=not default)
    if members and all(m is int for m in members):
        return dict(type=int)
    if members and all(m in (int, float) for m in members):
        return dict(type=float)
    if any(m in (str, Path, os.PathLike) for m in members):
        return dict(type=str)
    if len(members) == 1 and members[0] in (Sequence, list, tuple):
        items = typing.get_args(_members(annotation)[0])
        parse = next((m.parse for m in _members(items[0]) if hasattr(m, "parse")), None) if items else None
        return None if parse is None else dict(action="append", parse=parse)
    return None


def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls.__call__)
    except Exception:  # unresolvable annotations: those keywords get no flag
        return {}


def signature_flags(pipelines: dict) -> list[tuple[CallFlag, dict, list[str]]]:
    """Flags for the keywords of the pipelines' calls beyond FIXED_FLAGS: (flag, argparse keywords,
    the pipelines taking it), one per keyword name (the first pipeline's form wins)."""
    fixed = {f.keyword for f in FIXED_FLAGS} | NO_FLAG
    found: dict[str, tuple[CallFlag, dict, list[str]]] = {}
    for name, cls in pipelines.items():
        hints = _hints(cls)
        for p in _call_keywords(cls)[0].values():
            if p.name in fixed:
                continue
            if p.name in found:
                found[p.name][2].append(name)
                continue
            form = _flag_form(hints.get(p.name, p.annotation), p.default)
            if form is None:
                continue
            negated = form.get("const") is False
            flag = "--" + ("no-" if negated else "") + p.name.replace("_", "-")
            found[p.name] = (CallFlag("call_" + p.name, p.name, flag, form.pop("parse", None)), form, [name])
    return list(found.values())


def call_arguments(args, cls, name: str, demo: bool) -> dict:
    """The keywords for the pipeline call from the flags given; an InputError for a flag the
    pipeline does not take or a keyword it requires that no flag gave."""
    params, any_keyword = _call_keywords(cls)
    kwargs = {}
    for f in args.call_flags:
        value = getattr(args, f.dest)
        if value is None:
            continue
        if f.keyword not in params and not any_keyword:
            raise InputError(f"the {name} pipeline takes no {f.flag}")
        kwargs[f.keyword] = [f.parse(s) for s in value] if f.parse else value
    if demo:
        kwargs.update({k: v for k, v in DEMO_CALL.items() if k in params and k not in kwargs})
    flags = {f.keyword: f.flag for f in args.call_flags}
    for p in params.values():
        if p.default is p.empty and p.name not in kwargs:
            raise InputError(f"the {name} pipeline needs {flags.get(p.name, p.name)}")
    return kwargs


def check_call(cls, kwargs: dict) -> None:
    """The pipeline's own request checks on the values given (defaults stand in for the rest), and
    every conditioning image decoded once, so a bad request fails before any model loads."""
    from fastltx.media.images import read_image
    from fastltx.pipelines.request import check_request

    params, _ = _call_keywords(cls)
    multiple = 64 if getattr(cls, "two_stage", False) else 32

    def value(keyword, fallback):
        if keyword in kwargs:
            return kwargs[keyword]
        default = params[keyword].default if keyword in params else None
        return fallback if default is None or default is inspect.Parameter.empty else default

    images = tuple(kwargs.get("images", ()))
    check_request(value("height", multiple), value("width", multiple), value("num_frames", 121),
                  value("fps", 24.0), images, multiple, kwargs.get("steps"))
    for image in images:
        read_image(image.path)


def check_output(path: Path, lossless: bool) -> None:
    from fastltx.media.video import check_output_folder, check_output_path

    if lossless:
        check_output_folder(path)
    elif check_output_path(path).is_dir():
        raise MediaError(path, "is a folder; give a file name such as out.mp4 (or use --lossless)")


def model_files(args, name: str):
    """(checkpoint, text encoder, upsampler, distilled LoRA, LoRAs, demo note) for ``load_pipeline``;
    only the files the pipeline uses, each header read once to catch a wrong file early."""
    from fastltx.checkpoint.safetensors_file import read_header
    from fastltx.pipelines import NEEDS

    needs_upsampler, needs_lora = NEEDS[name]
    if args.checkpoint is None:
        given = [f for f, v in (("--text-encoder", args.text_encoder), ("--upsampler", args.upsampler),
                                ("--distilled-lora", args.distilled_lora), ("--lora", args.lora)) if v]
        if given:
            raise InputError(f"{given[0]} needs --checkpoint (without one the demo model brings its own files)")
        from fastltx.pipelines.demo import default_cache, demo_files, demo_loras

        root = args.demo_dir or default_cache()
        files = demo_files(root)
        note = (f"no --checkpoint given: running the tiny random demo model from {Path(files.checkpoint).parent} "
                "(its output is noise; pass --checkpoint and --text-encoder for real weights)")
        return (files.checkpoint, files.text_encoder, files.upsampler if needs_upsampler else None,
                files.stage2_loras[0] if needs_lora else None, demo_loras(root, name), note)
    if args.demo_dir is not None:
        raise InputError("--demo-dir is for the demo model only; drop it or drop --checkpoint")
    if args.upsampler is not None and not needs_upsampler:
        raise InputError(f"the {name} pipeline uses no --upsampler")
    if args.distilled_lora is not None and not needs_lora:
        raise InputError(f"the {name} pipeline uses no --distilled-lora")
    if args.text_encoder is None:
        raise InputError(f"the {name} pipeline needs a Gemma 3 text encoder directory (--text-encoder)")
    if needs_upsampler and args.upsampler is None:
        raise InputError(f"the {name} pipeline needs a latent upsampler file (--upsampler)")
    if needs_lora and args.distilled_lora is None:
        raise InputError(f"the {name} pipeline needs the distilled LoRA for its second stage (--distilled-lora)")
    distilled = None if args.distilled_lora is None else _path_strength(args.distilled_lora)
    loras = [_path_strength(s) for s in args.lora or ()]
    if not Path(args.text_encoder).is_dir():
        raise InputError(f"{args.text_encoder}: the text encoder is not a folder (a local Gemma 3 directory)")
    for path in [args.checkpoint, args.upsampler, *(p for p, _ in loras), distilled and distilled[0]]:
        if path is not None and not Path(path).is_dir():  # a converted directory is checked when it loads
            header = read_header(path)
            if path == args.checkpoint:
                header.config()
    return args.checkpoint, args.text_encoder, args.upsampler, distilled, loras, None


def device_and_dtype(args, demo: bool):
    import torch

    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise InputError(f"unknown device {args.device!r} (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {args.device!r} asked for, but CUDA is not available here")
    dtype = args.dtype or ("float32" if demo and device.type == "cpu" else "bfloat16")
    return device, getattr(torch, dtype)


@contextmanager
def _terminate_as_exit():
    """SIGTERM unwinds like Ctrl-C, so the atomic writers remove their temporary files."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def process_count(gpus: int | None, launched: int, device) -> int:
    """How many processes generate (--gpus, else as many as torchrun started), checked against the device."""
    import torch

    gpus = launched if gpus is None else gpus
    if gpus < 1:
        raise InputError(f"--gpus must be at least 1, got {gpus}")
    if launched > 1 and gpus != launched:
        raise InputError(f"--gpus {gpus}, but torchrun started {launched} processes")
    if gpus > 1 and device.type == "cuda":
        if device.index is not None:
            raise InputError("--gpus uses cuda:0 to cuda:N-1 itself: give --device cuda (or cpu), not a numbered GPU")
        if launched == 1 and torch.cuda.device_count() < gpus:
            raise InputError(f"--gpus {gpus} asked for, but {torch.cuda.device_count()} GPU(s) are visible")
    return gpus


def _generate(args) -> int | None:
    start = time.perf_counter()
    from fastltx.pipelines import PIPELINES, load_pipeline

    name, cls = args.pipeline, PIPELINES[args.pipeline]
    demo = args.checkpoint is None
    output = Path(args.output)
    kwargs = call_arguments(args, cls, name, demo)
    check_output(output, args.lossless)
    check_call(cls, kwargs)
    device, dtype = device_and_dtype(args, demo)
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun in each process it starts
    gpus = process_count(args.gpus, launched, device)
    if args.cuda_graphs:
        from fastltx.pipelines.components import check_cuda_graphs
        check_cuda_graphs(device, args.memory)
    checkpoint, text_encoder, upsampler, distilled, loras, note = model_files(args, name)  # (demo set written once)
    if gpus > 1 and launched == 1:  # all checked: one process per GPU
        from fastltx.runtime.distributed import launch_torchrun
        return launch_torchrun(gpus, args.argv)
    world = None
    if launched > 1:
        from fastltx.runtime.distributed import init_distributed
        world = init_distributed(launched, device)
        if not world.main and "progress" in _call_keywords(cls)[0]:
            kwargs["progress"] = False
    if note and (world is None or world.main):
        print(note, flush=True)
    pipe = load_pipeline(name, checkpoint, text_encoder, upsampler, distilled, loras, device=device, dtype=dtype,
                         world=world, memory=args.memory, compile=args.compile, fp8=args.fp8,
                         cuda_graphs=args.cuda_graphs, sequence_exchange=args.sequence_exchange)
    setup = time.perf_counter() - start
    result = pipe(**kwargs)
    if result is None:  # not rank 0: rank 0 writes the output
        return 0
    saved = time.perf_counter()
    path = result.save(output, lossless=args.lossless)
    timings = {"setup": setup, **result.timings, "save": time.perf_counter() - saved}
    print(summary(timings, time.perf_counter() - start, path, result))


def summary(timings: dict[str, float], total: float, path: Path, result) -> str:
    width = max(len(k) for k in [*timings, "total"]) + 2
    lines = [f"{k:<{width}}{v:8.2f} s" for k, v in timings.items()]
    lines.append(f"{'total':<{width}}{total:8.2f} s")
    lines.append(peak_memory())
    f, h, w = result.video.shape[:3]
    audio = "" if result.audio is None else f", stereo audio at {result.sample_rate} Hz"
    lines.append(f"wrote {path} ({f} frames of {h}x{w} at {result.fps:g} fps{audio})")
    return "\n".join(lines)


def peak_memory() -> str:
    """The run's peak host memory (resident set) and, on CUDA, the peak GPU memory PyTorch reserved."""
    import torch

    from fastltx.runtime.memory import gib, peak_rss
    rss = peak_rss()
    parts = [f"host {gib(rss)} (resident set)"] if rss is not None else []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        parts.append(f"GPU {gib(torch.cuda.max_memory_reserved())}")
    return "peak memory: " + (", ".join(parts) or "unknown")


def _memory(value: str):
    try:
        return parse_memory(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_generate(sub) -> None:
    from fastltx.pipelines import PIPELINES

    p = sub.add_parser("generate", help="generate a video with audio (no --checkpoint: the tiny demo model)",
                       description="Generate a video with audio. Without --checkpoint, a tiny random demo model "
                                   "(written once by the package) runs instead, small and fast on CPU.")
    p.add_argument("--pipeline", choices=list(PIPELINES), default="distilled")
    files = p.add_argument_group("model files (local paths)")
    files.add_argument("--checkpoint", help="official single-file checkpoint (.safetensors)")
    files.add_argument("--text-encoder", help="local Hugging Face Gemma 3 directory")
    files.add_argument("--upsampler", help="latent upsampler (.safetensors), for the two-stage pipelines")
    files.add_argument("--distilled-lora", metavar="PATH[:STRENGTH]", help="distilled LoRA for the second stage "
                                                                           "of the two-stage dev pipelines")
    files.add_argument("--lora", action="append", metavar="PATH[:STRENGTH]", help="a LoRA fused at load "
                                                                                  "(repeatable)")
    files.add_argument("--demo-dir", help="where the demo model set is written (default ~/.cache/fastltx)")
    call = p.add_argument_group("generation (each only where the pipeline takes it)")
    call.add_argument("--prompt")
    call.add_argument("--negative-prompt")
    call.add_argument("--height", type=int, help="pixels, a multiple of 32 (64 for two-stage pipelines)")
    call.add_argument("--width", type=int, help="pixels, a multiple of 32 (64 for two-stage pipelines)")
    call.add_argument("--frames", type=int, help="8k+1 frames: 1, 9, ..., 121")
    call.add_argument("--fps", type=float)
    call.add_argument("--seed", type=int)
    call.add_argument("--steps", type=int, help="denoising steps of the guided stage")
    call.add_argument("--image", action="append", metavar="PATH[:FRAME[:STRENGTH]]",
                      help="conditioning image at a pixel frame (default 0) with a strength (default 1); repeatable")
    call.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                      help="no progress bars")
    extra = p.add_argument_group("pipeline-specific (from the pipelines' call signatures)")
    auto = []
    for flag, form, names in signature_flags(PIPELINES):
        try:
            metavar = {} if "const" in form else dict(metavar=flag.keyword.upper())
            extra.add_argument(flag.flag, dest=flag.dest, help=f"for {', '.join(names)}", **metavar, **form)
        except argparse.ArgumentError:  # clashes with a flag of its own: left to the Python API
            continue
        auto.append(flag)
    p.set_defaults(call_flags=[*FIXED_FLAGS, *auto])
    run = p.add_argument_group("run and output")
    run.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    run.add_argument("--gpus", type=int, metavar="N",
                     help="split the work over N GPUs (one process each, started through torchrun; with "
                          "--device cpu, N CPU processes)")
    run.add_argument("--dtype", choices=("bfloat16", "float32"),
                     help="default bfloat16 (float32 for the demo on CPU)")
    run.add_argument("--memory", default="auto", type=_memory, metavar="auto|full|24g|16g",
                     help="GPU memory plan: auto (default: fit the free memory), full (every model resident), or a "
                          "budget such as 24g or 16g (models take turns by stage, fp8 transformer, layers streamed "
                          "from host memory when needed)")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the transformer blocks (first call ~10-20 s longer, then faster steps; "
                          "recommended with --memory 24g/16g, where the fp8 transformer runs eager much slower)")
    run.add_argument("--fp8", action="store_true",
                     help="fp8 block linears even where the bf16 transformer fits (fp8 matmuls with --compile "
                          "on Ada / Hopper GPUs; elsewhere fp8 weights dequantised for bf16 matmuls)")
    run.add_argument("--cuda-graphs", action="store_true",
                     help="the transformer blocks through CUDA graphs (--memory full): a few launches a step "
                          "instead of every kernel, for host-bound steps (compiled fp8 at small sizes, --gpus 4 at "
                          "768x1280); a shape's second step records its graphs, so it pays over many steps, not "
                          "in one short call")
    run.add_argument("--sequence-exchange", default="auto", choices=EXCHANGES,
                     help="with --gpus: how the split video tokens' self-attention exchanges them: auto (default: "
                          "push on 2 GPUs with peer access and symmetric memory, keys on 2 others, heads on "
                          "more where they divide the video heads, else keys), heads (all-to-alls), keys (keys "
                          "and values gathered through NCCL), push (pushed into the peers' memory while the "
                          "queries are projected; needs CUDA symmetric memory)")
    run.add_argument("--lossless", action="store_true", help="a folder of PNG frames and audio.wav (float) "
                                                             "instead of an MP4")
    run.add_argument("-o", "--output", required=True, help="the MP4 file (or the folder, with --lossless)")
    p.set_defaults(run=_generate)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fastltx", description="Fast, faithful LTX-2 inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    p = sub.add_parser("inspect", help="print the model version and components of a checkpoint")
    p.add_argument("path", help="an official single-file .safetensors checkpoint")
    p.set_defaults(run=_inspect)
    p = sub.add_parser("tiny", help="write a tiny random checkpoint in the official layout")
    p.add_argument("path")
    p.add_argument("--version", choices=("v1", "v2"), default="v1", help="v1: LTX-2 numerics, v2: LTX-2.3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=None, help="number of transformer blocks (default 2)")
    p.set_defaults(run=_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    if "PYTORCH_ALLOC_CONF" not in os.environ:  # before CUDA starts: models of many sizes come and go
        os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        with _terminate_as_exit():
            code = args.run(args)
    except (UsageError, *USER_ERRORS) as e:
        print("fastltx: error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastltx: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
