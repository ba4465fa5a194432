"""The pipelines' side of the memory plan (``fastltx.runtime.memory``): the models' sizes read from
their files, each stage's needs from the request, each model loaded in the form the plan gives it,
and models moved off and back onto the device as the stages need them.

``Components`` owns one ``ModelMemory``. A pipeline call starts with ``plan_call`` (in
``Pipeline.start``: the plan for this request and the device's memory, before any model loads),
each stage with ``begin_stage``; every access to a model (``Components.__getattribute__``) and every
forward of a model someone still holds goes through ``enter``, which brings it (back) onto the
device, moving the least recently used models of earlier stages out when the budget needs it.
Moved-out models keep their weights in host memory (``fastltx.runtime.offload``) and come back at
host-to-device speed. With no budget (``full``, or ``auto`` off the GPU) nothing is ever moved.
"""

import dataclasses
import re

import torch

from fastltx.runtime.memory import (PLAIN, Form, MemoryPlan, ModelSize, OutOfMemory, Residency, StageNeed,
                                    budget_for, expandable_segments, full_plan_check, layered_size, minimum_bytes, module_bytes, parse_memory,
                                    plan_memory, suggest, usable_memory)
from fastltx.runtime.offload import Offloaded, load_layered

TOKENS = re.compile(r"Tried to allocate ([\d.]+) (GiB|MiB|KiB|B)")
_UNITS = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10, "B": 1}


def plan_name(attribute: str) -> str:
    return attribute.lstrip("_")


def layers_of(name: str, model) -> torch.nn.ModuleList | None:
    """The layer stack a model streams by (model knowledge: the transformer's blocks, Gemma's layers)."""
    if name == "transformer":
        return model.transformer_blocks
    if name == "text_encoder":
        return model.gemma.layers
    return None


def host_parts_of(name: str, model) -> list:
    """Parts run from host memory when the model streams (model knowledge: Gemma's token embedding)."""
    return model.gemma.host_parts if name == "text_encoder" else []


def _offloaded(name: str, model, device, ahead: int = 2) -> Offloaded:
    return Offloaded(model, device, layers_of(name, model), ahead, host_parts_of(name, model))


class ModelMemory:
    def __init__(self, components, memory="auto"):
        self.c = components
        self.setting = parse_memory(memory)
        expandable_segments(components.device)  # models of many sizes come and go: no fragmentation
        self.plan: MemoryPlan | None = None
        self.residency = Residency(None)
        self.offloaded: dict[str, Offloaded] = {}
        self.hooked: set[str] = set()
        self._sizes: dict[str, ModelSize] = {}
        self._configs: dict = {}
        self.needs: list[StageNeed] = []

    # ------------------------------------------------------------------------------------------ sizes
    def _models(self) -> dict[str, torch.nn.Module]:
        d = self.c.__dict__
        return {plan_name(a): d[a] for a in type(self.c).MODELS if a in d}

    def size(self, name: str) -> ModelSize | None:
        """Device bytes of a model in the run dtype: measured once loaded, else from its file(s)."""
        if name not in self._sizes:
            size = _file_size(self, name)
            if size is None:
                return None
            self._sizes[name] = size
        return self._sizes[name]

    def config(self, name: str):
        """What the activation estimates need of a model, without loading its weights."""
        if name not in self._configs:
            self._configs[name] = _config(self, name)
        return self._configs[name]

    # ------------------------------------------------------------------------------------------ the plan
    def plan_call(self, height: int, width: int, num_frames: int, fps: float, two_stage: bool, passes: int = 1,
                  images: int = 0) -> MemoryPlan:
        """Choose this call's plan (``OutOfMemory`` before anything loads when no form fits)."""
        device = self.c.device
        on_host = []
        for name, model in self._models().items():  # models handed in from outside (benchmarks)
            if name in self.residency.loaded or name in self.offloaded or not isinstance(model, torch.nn.Module):
                continue
            if all(t.device == device for t in [*model.parameters(), *model.buffers()]):
                self.residency.loaded[name] = module_bytes(model, device=device)  # on the device: held
            else:  # on the host: homed there (after the plan), brought in at first use in the plan's form
                on_host.append(name)
        usable = usable_memory(device, self.residency.held)
        needs = self.needs = self.stage_needs(height, width, num_frames, fps, two_stage, passes, images)
        names = dict.fromkeys(m for n in needs for m in n.models)  # in stage order
        sizes = {m: s for m in names if (s := self.size(m)) is not None}
        if self.setting.full:
            plan = MemoryPlan(self.setting, None, sizes, {}, {}, usable)
            if device.type == "cuda":
                full_plan_check(plan, needs, usable)
        else:
            plan = plan_memory(self.setting, budget_for(self.setting, usable), sizes, needs, self._fp8_models(),
                               usable=usable)
        self.plan = plan
        self.residency.budget, self.residency.reserves = plan.budget, dict(plan.reserves)
        self.residency.keep = plan.keep
        for name in on_host:  # homed now in the form planned, which stays theirs (no file to reload from)
            model = self._models()[name]
            if name == "text_encoder" and self.form(name).fp8:
                from fastltx.models.text_encoder.encoder import convert_to_fp8
                convert_to_fp8(model, device)
            elif name in self._sizes:  # kept in the run dtype: no fp8 form for later plans
                self._sizes[name] = dataclasses.replace(self._sizes[name], fp8_layer=None, fp8_other=None)
            off = self.offloaded[name] = _offloaded(name, model, device)
            off.home_all()
        for name in list(self._models()):
            self._reconcile(name)
        return plan

    def stage_needs(self, height: int, width: int, num_frames: int, fps: float, two_stage: bool, passes: int,
                    images: int) -> list[StageNeed]:
        return stage_needs(self, height, width, num_frames, fps, two_stage, passes, images)

    def _fp8_any(self) -> bool:
        """Whether the plan may store weights in fp8: on any GPU (dequantised where it has no fp8
        matmuls), elsewhere only when asked (``fp8=True``)."""
        return self.c.fp8 or self.c.device.type == "cuda"

    def _fp8_allowed(self) -> bool:
        return self._fp8_any() and not self.c.files.stage2_loras

    def _fp8_models(self) -> list[str]:
        """The models the plan may give fp8 weights: the transformer (not with a stage-2 LoRA, switched
        on the bf16 weights; ``fp8_weight_only`` says which fp8) and the text encoder (weights only)."""
        return (["transformer"] if self._fp8_allowed() else []) + (["text_encoder"] if self._fp8_any() else [])

    def form(self, name: str) -> Form:
        form = self.plan.form(name) if self.plan is not None else PLAIN
        if name == "transformer" and self.c.fp8 and not form.fp8:
            form = Form(True, form.streamed, form.ahead)
        return form

    def _reconcile(self, name: str) -> None:
        """A loaded model whose form this plan changes: a different fp8 choice reloads it; a different
        number of streamed layers re-places it at its next use."""
        model = self._models()[name]
        form = self.form(name)
        converted = getattr(model, "_fastltx_fp8", False)
        from_files = name == "transformer" or (name == "text_encoder" and self.c.files.text_encoder is not None)
        if name in ("transformer", "text_encoder") and converted != form.fp8 and from_files:
            self.drop(name)  # (a model handed in keeps the form it was first given)
        elif name in self.offloaded and self.offloaded[name].admitted and (
                self.offloaded[name].streamed, self.offloaded[name].ahead) != (form.streamed, form.ahead):
            self.evict(name)

    # ------------------------------------------------------------------------------------------ residency
    def begin_stage(self, stage: str) -> None:
        self.residency.begin_stage()

    def end_stage(self, stage: str) -> None:
        """Between stages no model is protected: what a pipeline loads there may move any out."""
        self.residency.begin_stage()

    def get(self, attribute: str):
        """``Components``' model ``attribute``: loaded on first use, brought back if it was moved out."""
        d = self.c.__dict__
        if attribute in d:
            self.enter(attribute)
            return d[attribute]
        name = plan_name(attribute)
        predicted = self.plan.device_bytes(name) if self.plan is not None else 0
        try:
            for other in self.residency.admit(name, predicted):
                self.evict(other)
            model = object.__getattribute__(self.c, attribute)  # the cached_property loads it
        except torch.OutOfMemoryError as e:
            self.residency.evict(name)
            raise self.out_of_memory(f"loading the {name.replace('_', ' ')}", e) from e
        except BaseException:
            self.residency.evict(name)
            raise
        self._loaded(name, model)
        return model

    def _loaded(self, name: str, model) -> None:
        off = self.offloaded.get(name)
        if off is None and self.plan is not None and self.plan.shared and isinstance(model, torch.nn.Module):
            # models take turns: make its host home now, while loading, not when it first has to leave
            # (pinning host memory is slow: that cost belongs to the cold call, not to the next one)
            off = self.offloaded[name] = _offloaded(name, model, self.c.device)
            off.home_all()
            off.admit()
        planned = self.plan is not None and name in self.plan.sizes
        self.residency.loaded[name] = (self.plan.device_bytes(name) if planned else off.device_bytes if off is not None
                                       else module_bytes(model, device=self.c.device))
        self._hook(name, model)

    def _hook(self, name: str, model) -> None:
        """A model someone still holds comes back when it runs (forward pre-hooks on it and its children)."""
        if name not in self.hooked and isinstance(model, torch.nn.Module):
            attribute = next(a for a in type(self.c).MODELS if plan_name(a) == name)
            hook = lambda module, args: self.enter(attribute)  # noqa: E731
            for m in [model, *model.children()]:
                m.register_forward_pre_hook(hook)
            self.hooked.add(name)

    def enter(self, attribute: str) -> None:
        name = plan_name(attribute)
        if name in self.residency.loaded:  # it stays; others may have to leave for its stage's activations
            for other in self.residency.admit(name, self.residency.loaded[name]):
                self.evict(other)
            return
        off = self.offloaded.get(name)
        if off is None:  # dropped: the next access loads it again
            return
        try:
            for other in self.residency.admit(name, self.plan.device_bytes(name) if self.plan else off.host_bytes):
                self.evict(other)
            off.admit(self.form(name).streamed, self.form(name).ahead)
        except torch.OutOfMemoryError as e:
            self.residency.evict(name)
            raise self.out_of_memory(f"bringing the {name.replace('_', ' ')} back", e) from e
        self.residency.loaded[name] = self.plan.device_bytes(name) if self.plan and name in self.plan.sizes \
            else off.device_bytes
        self._hook(name, self._models()[name])

    def evict(self, name: str) -> None:
        """Move a model's weights to host memory (a home is made the first time)."""
        model = self._models().get(name)
        self.residency.evict(name)
        if model is None:
            return
        if name == "transformer" and getattr(self.c, "_switch", None) is not None:
            self.c._switch.set(None)  # homes hold the weights without the switched LoRA
        off = self.offloaded.get(name)
        if off is None:
            off = _offloaded(name, model, self.c.device)
            off.home_all()
            self.offloaded[name] = off
        off.evict()

    def drop(self, name: str) -> None:
        """Forget a model entirely (it loads again from its file at the next use)."""
        attribute = next(a for a in type(self.c).MODELS if plan_name(a) == name)
        off = self.offloaded.pop(name, None)
        if off is not None:
            off.evict()
        self.c.__dict__.pop(attribute, None)
        self.residency.evict(name)
        self.hooked.discard(name)
        if name == "transformer":
            self.c._switch = None

    def weights_changed(self, name: str) -> None:
        """Weights were written in place (a LoRA switch): forget layers prefetched before."""
        off = self.offloaded.get(name)
        if off is not None:
            off.invalidate()

    def on_device(self, name: str) -> bool:
        return name in self.residency.loaded

    def decode_budget(self) -> int | None:
        """Bytes the video decode may use now (None: no budget, the decoder asks the device)."""
        if self.plan is None or self.plan.budget is None:
            return None
        return max(self.plan.budget - self.residency.held, 0)

    def out_of_memory(self, stage: str, error: BaseException) -> OutOfMemory:
        """A clear error for an allocation failure during ``stage``."""
        m = TOKENS.search(str(error))
        requested = int(float(m.group(1)) * _UNITS[m.group(2)]) if m else 0
        device = self.c.device
        allocated = torch.cuda.memory_allocated(device) if device.type == "cuda" else self.residency.held
        plan = self.plan
        usable = plan.usable if plan is not None else None
        budget = plan.budget if plan is not None and plan.budget is not None else usable
        minimum = 0
        if plan is not None:
            minimum = minimum_bytes(plan.sizes, self.needs, self._fp8_models())
        advice = suggest(minimum, usable, self.setting, smaller_than=None if self.setting.full else budget)
        return OutOfMemory(stage, allocated + requested, usable, self.setting, advice)

    # ------------------------------------------------------------------------------------------ loading
    def load_transformer(self):
        """The transformer in this call's form: plain (one read onto the device) or layer by layer
        (fp8 conversion on the device, host homes when a budget may move it, streamed layers)."""
        from fastltx.checkpoint.lora import fuse_loras, read_lora
        from fastltx.layers.linear import to_fp8
        from fastltx.models.transformer import fp8_linear, load_transformer, open_transformer
        from fastltx.models.transformer.model import fp8_weight_only

        c = self.c
        form = self.form("transformer")
        budgeted = self.plan is not None and self.plan.shared  # models take turns: homes in host memory
        if not form.fp8 and not budgeted:
            return load_transformer(c.files.checkpoint, c.device, c.dtype, attention_backend=c.attention_backend,
                                    loras=c.files.loras)
        loras = [(read_lora(p), float(s)) for p, s in c.files.loras]
        reader = open_transformer(c.files.checkpoint)
        adjust = None
        if loras:
            with torch.device("meta"):  # every LoRA tensor must land on a weight: checked once, on meta
                fuse_loras(reader.model.state_dict(), loras)
            adjust = lambda state: fuse_loras(state, _lora_subset(loras, state))  # noqa: E731
        weight_only = fp8_weight_only(c.compile, c.device)
        convert = (lambda layer: to_fp8(layer, fp8_linear, weight_only)) if form.fp8 else None  # noqa: E731
        off = Offloaded(reader.model, c.device, reader.model.transformer_blocks, form.ahead) if budgeted else None
        model = load_layered(reader, "transformer_blocks", c.device, c.dtype, convert, adjust, off)
        model._fastltx_fp8 = form.fp8
        model.set_attention_backend(c.attention_backend)
        if off is not None:
            self.offloaded["transformer"] = off
            off.admit(form.streamed, form.ahead)
        return model

    def load_text_encoder(self):
        """The text encoder in this call's form: plain (one read onto the device), or layer by layer:
        fp8 weights converted on the device, and, when models take turns, homes in host memory and
        streamed layers."""
        from fastltx.models.text_encoder import (GemmaEncoder, TextEncoder, load_text_encoder, load_text_processor,
                                                 read_gemma_directory)
        from fastltx.models.text_encoder.encoder import to_fp8_weights
        from fastltx.models.text_encoder.gemma import load_tokenizer, open_language_model

        c = self.c
        form = self.form("text_encoder")
        shared = self.plan is not None and self.plan.shared  # models take turns: homes in host memory
        if not form.fp8 and not shared:
            return load_text_encoder(c.files.text_encoder, c.files.checkpoint, c.device, c.dtype)
        directory = read_gemma_directory(c.files.text_encoder)
        on_device = form.fp8 or not shared  # (the fp8 conversion runs there; a home is made with the rest)
        processor = load_text_processor(c.files.checkpoint, directory.geometry, c.device if on_device else "cpu",
                                        c.dtype)
        if form.fp8:
            to_fp8_weights(processor)
        reader = open_language_model(directory)
        encoder = TextEncoder(GemmaEncoder(reader.model, load_tokenizer(directory.tokenizer_dir)), processor)
        encoder._fastltx_fp8 = form.fp8
        off = _offloaded("text_encoder", encoder, c.device, form.ahead) if shared else None
        load_layered(reader, "layers", c.device, c.dtype, to_fp8_weights if form.fp8 else None, offload=off)
        if off is not None:
            self.offloaded["text_encoder"] = off
            off.admit(form.streamed, form.ahead)
        else:
            encoder.to(c.device)  # the computed buffers (rotary tables, embedding scale), as load_gemma does
        return encoder


def _lora_subset(loras, state):
    """The LoRA pairs whose weights are in ``state`` (a part of the model being loaded)."""
    from fastltx.checkpoint.lora import LoraWeights
    return [(LoraWeights(w.path, {k: ab for k, ab in w.pairs.items() if k in state}, w.metadata), s)
            for w, s in loras]


# ------------------------------------------------------------------------------------------ sizes and needs
def _file_size(memory: ModelMemory, name: str) -> ModelSize | None:
    """A model's size from its file(s), else from the model itself when it was handed in; None when unknown."""
    from fastltx.checkpoint.safetensors_file import CheckpointError
    c = memory.c
    try:
        size = _size_from_files(c, name)
    except (CheckpointError, OSError):
        size = None
    loaded = memory._models().get(name)
    if size is None and isinstance(loaded, torch.nn.Module):
        layers = layers_of(name, loaded)
        size = layered_size(loaded, layers, c.dtype) if layers is not None else ModelSize(module_bytes(loaded, c.dtype))
        host = sum(module_bytes(part, c.dtype) for part in host_parts_of(name, loaded))
        size = dataclasses.replace(size, host=host)
        convertible = any(t.device != c.device for t in loaded.parameters())  # on the host: not homed yet
        if name == "text_encoder" and convertible and not getattr(loaded, "_fastltx_fp8", False):  # fp8 form, on meta
            from fastltx.models.text_encoder.encoder import to_fp8_weights
            fp8_layer = layered_size(loaded, layers, c.dtype, to_fp8_weights).fp8_layer
            other = size.other - module_bytes(loaded.processor, c.dtype)
            size = dataclasses.replace(size, fp8_layer=fp8_layer,
                                       fp8_other=other + fp8_processor_bytes(loaded.processor.cfg, c.dtype))
    return size


def fp8_processor_bytes(cfg, dtype: torch.dtype) -> int:
    """Bytes of the text processor (feature extractor and connectors) with fp8 weights, counted on meta."""
    from fastltx.models.text_encoder import TextProcessor
    from fastltx.models.text_encoder.encoder import to_fp8_weights
    with torch.device("meta"):
        processor = TextProcessor(cfg).to(dtype)
    to_fp8_weights(processor)
    return module_bytes(processor, dtype)


def _size_from_files(c, name: str) -> ModelSize | None:
    from fastltx.checkpoint.loading import stored_bytes
    from fastltx.checkpoint.safetensors_file import read_header
    dtype, files = c.dtype, c.files
    if name == "transformer":
        from fastltx.layers.linear import to_fp8
        from fastltx.models.transformer import fp8_linear, open_transformer
        model = open_transformer(files.checkpoint).model
        return layered_size(model, model.transformer_blocks, dtype, lambda layer: to_fp8(layer, fp8_linear))
    if name == "text_encoder":
        if files.text_encoder is None:
            return None
        from fastltx.models.text_encoder import read_gemma_directory
        from fastltx.models.text_encoder.gemma import build_language_model
        from fastltx.models.text_encoder.encoder import to_fp8_weights
        from fastltx.models.text_encoder.processor import checkpoint_key, read_text_config
        directory = read_gemma_directory(files.text_encoder)
        gemma = build_language_model(directory.text_config)
        size = layered_size(gemma, gemma.layers, dtype, to_fp8_weights)
        header = read_header(files.checkpoint)
        processor = stored_bytes(header, checkpoint_key, dtype)
        return ModelSize(size.other + processor, size.layer, size.layers, size.fp8_layer,
                         host=module_bytes(gemma.embed_tokens, dtype),
                         fp8_other=size.other + fp8_processor_bytes(read_text_config(header, directory.geometry), dtype))
    path, key_map = _small(c, name)
    if path is None:
        return None
    return ModelSize(stored_bytes(read_header(path), key_map, dtype))


def _small(c, name: str):
    """(file, key map) of the models without a layer stack."""
    files = c.files
    if name in ("video_encoder", "video_decoder", "latent_statistics"):
        from fastltx.models.video_vae import decoder_key, encoder_key
        from fastltx.models.video_vae import _statistics_key as statistics_key
        return files.checkpoint, {"video_encoder": encoder_key, "video_decoder": decoder_key,
                                  "latent_statistics": statistics_key}[name]
    if name in ("audio_encoder", "audio_decoder"):
        from fastltx.models.audio_vae import checkpoint_key
        return files.checkpoint, checkpoint_key(name.split("_")[1])
    if name == "vocoder":
        from fastltx.models.vocoder import checkpoint_key
        return files.checkpoint, checkpoint_key
    if name == "upsampler":
        from fastltx.models.upsampler import checkpoint_key
        return files.upsampler, checkpoint_key
    return None, None


def _config(memory: ModelMemory, name: str):
    """Transformer config, Gemma text config, or video decoder config: from the loaded model or the files."""
    from fastltx.checkpoint.safetensors_file import CheckpointError, read_header
    c = memory.c
    loaded = memory._models().get(name)
    try:
        if name == "transformer":
            if loaded is not None:
                return loaded.cfg
            from fastltx.models.transformer import open_transformer
            return open_transformer(c.files.checkpoint).model.cfg
        if name == "text_encoder":
            if loaded is not None:
                return loaded.gemma.language_model.config
            from fastltx.models.text_encoder import read_gemma_directory
            return read_gemma_directory(c.files.text_encoder).text_config
        if name == "video_decoder":
            if loaded is not None:
                return loaded.cfg
            from fastltx.models.video_vae import DecoderConfig
            header = read_header(c.files.checkpoint)
            return DecoderConfig.from_checkpoint_config(header.config(), header.path)
    except (CheckpointError, OSError):
        return None
    return None


def stage_needs(memory: ModelMemory, height: int, width: int, num_frames: int, fps: float, two_stage: bool,
                passes: int, images: int) -> list[StageNeed]:
    """What each stage of a call loads at once, and its activations (estimates from the models)."""
    from fastltx.conditioning.latents import VideoGrid, audio_latent_frames
    from fastltx.models.text_encoder.encoder import WORKSPACE as TEXT_WORKSPACE
    from fastltx.models.text_encoder.encoder import encode_bytes
    from fastltx.models.transformer.memory import WORKSPACE as FORWARD_WORKSPACE
    from fastltx.models.transformer.memory import forward_bytes
    from fastltx.models.video_vae.memory import WORKSPACE as DECODE_WORKSPACE
    from fastltx.models.video_vae.memory import estimate_decode_bytes

    c = memory.c
    cuda = c.device.type == "cuda"
    dtype = c.dtype
    needs = []
    text = memory.config("text_encoder")
    if text is not None:
        prompts = 2 if passes > 1 else 1
        needs.append(StageNeed("text", ("text_encoder",), encode_bytes(
            text.hidden_size, text.num_hidden_layers, text.intermediate_size, prompts, dtype=dtype,
            workspace=TEXT_WORKSPACE if cuda else 0)))
    cfg = memory.config("transformer")
    with_images = ("video_encoder",) if images else ()
    full = VideoGrid.for_pixels(num_frames, height, width, fps)
    audio_tokens = audio_latent_frames(num_frames, fps)
    if cfg is not None:
        def forward(grid, batch):
            return forward_bytes(cfg, grid.tokens, audio_tokens, 1024, batch, dtype,
                                 FORWARD_WORKSPACE if cuda else 0)
        if two_stage:
            half = VideoGrid.for_pixels(num_frames, height // 2, width // 2, fps)
            needs.append(StageNeed("stage 1", ("transformer",) + with_images, forward(half, passes)))
            needs.append(StageNeed("upsample", ("transformer", "upsampler"), 0))
            needs.append(StageNeed("stage 2", ("transformer",) + with_images, forward(full, 1)))
        else:
            needs.append(StageNeed("stage 1", ("transformer",) + with_images, forward(full, passes)))
    decoder = memory.config("video_decoder")
    if decoder is not None:
        latent = (1, decoder.latent_channels, full.frames, full.height, full.width)
        decode = estimate_decode_bytes(decoder, latent, dtype, chunk_frames=1) - (0 if cuda else DECODE_WORKSPACE)
        needs.append(StageNeed("decode", ("video_decoder", "audio_decoder", "vocoder"), decode))
    return needs
