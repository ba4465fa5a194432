"""The memory plan: which models stay on the GPU, which come in per stage, which stream their layers.

Settings (``memory=`` of ``load_pipeline``, ``--memory`` of the CLI):

* ``"full"``: every model resident in the run dtype once loaded, nothing checked or moved (the old
  behaviour; what ``auto`` becomes when everything fits).
* ``"auto"`` (default): a budget from the device's usable memory at the start of each call.
* ``"24g"``, ``"16g"`` (any ``<N>g`` / ``<N>m``, or a number of bytes): that budget, capped by what
  the device has.

For a budget, ``plan_memory`` picks for each model with a layer stack (the transformer, the text
encoder) the fastest form that fits every stage it runs in, next to that stage's activations and
the small models loaded with it: (1) resident in the run dtype, (2) resident with fp8 linears
(where allowed), (3) its layers kept in host memory and as many as fit resident, the rest copied
in a layer or two ahead of use (``fastltx.runtime.offload``). Small models are resident while
loaded. When the other layered models fit beside the one running in most stages (the transformer)
in its form, that one is kept (``MemoryPlan.keep``) and the others run beside it, more streamed.
``Residency`` decides at run time which loaded models leave the GPU when another one (or a kept
one's activations) needs room: least recently used first, kept ones last, never one used in the
current stage. So the text encoder leaves before the transformer arrives, and the decoders come in
for decoding, only when they must. On CUDA the caching allocator's expandable segments are turned on
(``expandable_segments``): models of many sizes coming and going fragment fixed segments.

Everything here is arithmetic on byte counts; the counts come from the models (their headers and
their own activation estimates).
"""

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

GiB = 2**30
MiB = 2**20
MARGIN = 0.04  # of the budget, kept free for fragmentation
SLACK = 256 * MiB  # plus this
TIERS = (24, 16, 12, 8)  # GiB settings named in suggestions


def gib(n: int | float) -> str:
    """Bytes for people: GiB with one decimal (MiB / KiB below one GiB / MiB)."""
    if n >= GiB:
        return f"{n / GiB:.1f} GiB"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n / 2**10:.1f} KiB"


# ------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class MemorySetting:
    name: str  # "auto", "full" or the budget as given ("24g")
    budget: int | None = None  # bytes, for an explicit budget

    @property
    def full(self) -> bool:
        return self.name == "full"

    def __str__(self) -> str:
        return self.name


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([gm])(?:i?b)?\s*$", re.IGNORECASE)


def parse_memory(value: "str | int | MemorySetting") -> MemorySetting:
    """``"auto"``, ``"full"``, ``"24g"`` / ``"16G"`` / ``"1500m"``, or a number of bytes."""
    if isinstance(value, MemorySetting):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"memory budget must be positive, got {value}")
        name = f"{value / GiB:g}g" if value >= GiB else f"{value / MiB:g}m" if value >= MiB else f"{value} bytes"
        return MemorySetting(name, value)
    if isinstance(value, str):
        name = value.strip().lower()
        if name in ("auto", "full"):
            return MemorySetting(name)
        m = _SIZE.match(name)
        if m and float(m.group(1)) > 0:
            unit = GiB if m.group(2).lower() == "g" else MiB
            return MemorySetting(f"{m.group(1)}{m.group(2).lower()}", int(float(m.group(1)) * unit))
    raise ValueError(f"memory must be 'auto', 'full' or a size such as '24g' or '16g', got {value!r}")


def concrete_device(device: torch.device | str) -> torch.device:
    """``device`` with its index: "cuda" names the current CUDA device, and tensors there report
    "cuda:N" (``torch.device("cuda") != torch.device("cuda:0")``: a check of where models live
    against an index-less device would find none of them there)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def usable_memory(device: torch.device | str, held: int = 0) -> int | None:
    """Bytes the run may use on ``device``: free memory, PyTorch's cached free blocks, and ``held``
    (bytes of models this run holds and may move out), within the per-process fraction if one is
    set (``torch.cuda.set_per_process_memory_fraction``). None off the GPU (no limit)."""
    device = concrete_device(device)  # some CUDA queries insist on an index
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    reserved, allocated = torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device)
    usable = free + (reserved - allocated) + held
    fraction = torch.cuda.get_per_process_memory_fraction(device) if hasattr(
        torch.cuda, "get_per_process_memory_fraction") else 1.0
    if fraction < 1.0:
        usable = min(usable, int(fraction * total) - (allocated - held))
    return max(usable, 0)


def expandable_segments(device: torch.device | str) -> bool:
    """Let PyTorch's CUDA caching allocator grow segments in place (``expandable_segments``) unless
    its settings (``PYTORCH_CUDA_ALLOC_CONF``) name the option already; True when turned on now.
    Torch versions without a reader of those settings (2.11 among them) are left as they are: there
    ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` turns it on (the CLI sets that default).

    Runs here move models and activations of many sizes in and out; with fixed segments the freed
    space fragments: the first H100 runs under a 24 GiB cap failed with 1.6-2.7 GiB reserved but
    unusable, and the uncapped 1024x1536 decode with 5.8 GiB. Applies to segments made from now on."""
    if torch.device(device).type != "cuda":
        return False
    get = getattr(torch._C, "_accelerator_getAllocatorSettings", None)
    put = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    if get is None or put is None or "expandable_segments" in get():
        return False
    put("expandable_segments:True")
    return True


def budget_for(setting: MemorySetting, usable: int | None) -> int | None:
    """The plan's budget: None (no limit) for ``full`` and off the GPU without an explicit budget.
    On a GPU a margin stays free for the allocator's fragmentation; off it (tests) the budget is
    taken as given."""
    if setting.full:
        return None
    if usable is None:
        return setting.budget
    cap = usable if setting.budget is None else min(setting.budget, usable)
    return max(int(cap * (1 - MARGIN)) - SLACK, 0)


# ------------------------------------------------------------------------------------------ sizes and forms
def _unique_tensors(module: torch.nn.Module):
    seen = set()
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            yield t


def module_bytes(module: torch.nn.Module, dtype: torch.dtype | None = None, device: torch.device | None = None) -> int:
    """Bytes of a module's tensors (works on meta); floating-point ones counted in ``dtype`` when
    given (fp8 ones as they are); only those on ``device`` when given."""
    total = 0
    for t in _unique_tensors(module):
        if device is not None and t.device != device:
            continue
        size = t.element_size()
        if dtype is not None and t.is_floating_point() and t.element_size() > 1:
            size = torch.empty((), dtype=dtype).element_size()
        total += t.numel() * size
    return total


def layered_size(model: torch.nn.Module, layers: torch.nn.ModuleList, dtype: torch.dtype, fp8_layer=None) -> "ModelSize":
    """The ``ModelSize`` of a model built on meta; ``fp8_layer(layer)`` converts a (meta) copy of one
    layer to fp8 in place, to count it (None: no fp8 form)."""
    import copy
    per = max(module_bytes(layer, dtype) for layer in layers)
    fp8 = None
    if fp8_layer is not None:
        probe = copy.deepcopy(layers[0]).to(device="meta", dtype=dtype)
        fp8_layer(probe)
        fp8 = module_bytes(probe)
    return ModelSize(module_bytes(model, dtype) - sum(module_bytes(layer, dtype) for layer in layers), per,
                     len(layers), fp8)


@dataclass(frozen=True)
class ModelSize:
    """A model's bytes on the device in the run dtype: ``other`` outside its layer stack (all of a
    model without one), ``layer`` for each of its ``layers`` layers, ``fp8_layer`` for a layer with
    fp8 linears (None: no fp8 form), ``fp8_other`` for ``other`` in the fp8 form (None: as
    ``other``); ``host``: the part of ``other`` that runs from host memory when the model streams
    (``Offloaded``'s host parts; not converted to fp8)."""

    other: int
    layer: int = 0
    layers: int = 0
    fp8_layer: int | None = None
    host: int = 0
    fp8_other: int | None = None

    def total(self, fp8: bool = False) -> int:
        return self.other_bytes(fp8) + self.layers * (self.fp8_layer if fp8 else self.layer)

    def other_bytes(self, fp8: bool = False) -> int:
        return self.fp8_other if fp8 and self.fp8_other is not None else self.other


@dataclass(frozen=True)
class Form:
    """How a model is held on the device: ``fp8`` linears; ``streamed`` of its layers kept in host
    memory and copied in ``ahead`` layers ahead of use (slots for ahead + 1 layers on the device)."""

    fp8: bool = False
    streamed: int = 0
    ahead: int = 2

    def device_bytes(self, size: ModelSize) -> int:
        fp8 = self.fp8 and size.fp8_layer is not None
        per = size.fp8_layer if fp8 else size.layer
        slots = min(self.ahead + 1, self.streamed) * per
        other = size.other_bytes(fp8) - (size.host if self.streamed else 0)
        return other + (size.layers - self.streamed) * per + slots

    def describe(self, size: ModelSize) -> str:
        what = ("fp8 " if self.fp8 else "") + "resident"
        if self.streamed:
            what = f"{size.layers - self.streamed} of {size.layers} layers resident, {self.streamed} streamed from " \
                   f"host memory" + (" (fp8)" if self.fp8 else "")
        return f"{what}, {gib(self.device_bytes(size))} on the device"


PLAIN = Form()


@dataclass(frozen=True)
class StageNeed:
    """The models a stage has loaded at once and its activations (bytes above their weights)."""

    stage: str
    models: tuple[str, ...]
    activations: int


# ------------------------------------------------------------------------------------------ errors
class OutOfMemory(RuntimeError):
    """A stage does not fit the GPU memory: names the stage, what it needs, and what would fit."""

    def __init__(self, stage: str, needed: int | None, usable: int | None, setting: MemorySetting, advice: str):
        self.stage, self.needed, self.usable, self.setting, self.advice = stage, needed, usable, setting, advice
        need = f"it needs about {gib(needed)}" if needed is not None else "it ran out"
        have = f"{gib(usable)} is usable" if usable is not None else "the device's memory was exhausted"
        super().__init__(f"not enough GPU memory for {stage}: {need}, {have} under --memory {setting}; {advice}")


def suggest(minimum: int, usable: int | None, current: MemorySetting, smaller_than: int | None = None) -> str:
    """The ``--memory`` setting to try, given the most frugal plan's need ``minimum``: ``auto`` after
    ``full``; else the largest named tier within ``usable`` (and below ``smaller_than``, the budget
    that just failed) that holds ``minimum``, or the smallest one when the device's size is unknown."""
    limit = usable if usable is not None else math.inf
    if smaller_than is not None:
        limit = min(limit, smaller_than - 1)
    if current.full and smaller_than is None and minimum <= limit:
        return "--memory auto would fit (the models then take turns on the device)"
    fitting = [t for t in TIERS if t * GiB <= limit and minimum <= budget_for(MemorySetting(f"{t}g", t * GiB), t * GiB)]
    if fitting:
        return f"--memory {max(fitting) if usable is not None else min(fitting)}g would fit"
    need = math.ceil((minimum + SLACK) / (1 - MARGIN) / GiB)
    if need * GiB <= limit:
        return f"--memory {need}g would fit"
    return "no --memory setting fits: lower the resolution or the number of frames"


# ------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class MemoryPlan:
    setting: MemorySetting
    budget: int | None  # bytes the models and activations may use; None: no limit
    sizes: dict[str, ModelSize] = field(default_factory=dict)
    forms: dict[str, Form] = field(default_factory=dict)  # models not named: PLAIN
    reserves: dict[str, int] = field(default_factory=dict)  # activations while each model runs
    usable: int | None = None
    shared: bool = False  # the models do not all fit at once: they take turns (host homes needed)
    keep: tuple[str, ...] = ()  # models that stay on the device through every stage (moved out last)

    def form(self, name: str) -> Form:
        return self.forms.get(name, PLAIN)

    def device_bytes(self, name: str) -> int:
        size = self.sizes.get(name)
        return 0 if size is None else self.form(name).device_bytes(size)

    def describe(self) -> str:
        head = f"memory {self.setting}: " + ("no limit" if self.budget is None else f"budget {gib(self.budget)}" + (
            ", everything fits at once" if not self.shared else
            f", the {' and '.join(n.replace('_', ' ') for n in self.keep)} stays, the rest take turns"
            if self.keep else ", models take turns by stage"))
        lines = [head] + [f"  {name}: {self.form(name).describe(size)}" for name, size in self.sizes.items()]
        return "\n".join(lines)


def _stage_bytes(need: StageNeed, sizes: dict[str, ModelSize], forms: dict[str, Form]) -> int:
    return need.activations + sum(forms.get(m, PLAIN).device_bytes(sizes[m]) for m in need.models if m in sizes)


def _forms_for(size: ModelSize, fp8: bool, ahead: int) -> list[Form]:
    """The forms of a layered model, fastest first."""
    forms = [PLAIN] + ([Form(fp8=True)] if fp8 and size.fp8_layer is not None else [])
    per_fp8 = fp8 and size.fp8_layer is not None
    forms += [Form(fp8=per_fp8, streamed=s, ahead=ahead) for s in range(1, size.layers + 1)]
    return forms


def minimum_bytes(sizes: dict[str, ModelSize], stages: Sequence[StageNeed], fp8: Iterable[str] = (),
                  ahead: int = 2) -> int:
    """The most any stage needs with every layered model in its most frugal form (all layers streamed)."""
    fp8 = set(fp8)
    frugal = {m: _forms_for(s, m in fp8, ahead)[-1] for m, s in sizes.items() if s.layers}
    return max((_stage_bytes(n, sizes, frugal) for n in stages), default=0)


def plan_memory(setting: MemorySetting, budget: int | None, sizes: dict[str, ModelSize],
                stages: Sequence[StageNeed], fp8: Iterable[str] = (), ahead: int = 2,
                usable: int | None = None) -> MemoryPlan:
    """Choose each layered model's form (see the module docstring); raise ``OutOfMemory`` naming the
    first stage that does not fit even in the most frugal forms. ``fp8``: models allowed fp8 linears."""
    reserves: dict[str, int] = {}
    for need in stages:
        for m in need.models:
            reserves[m] = max(reserves.get(m, 0), need.activations)
    if budget is None:
        return MemoryPlan(setting, None, dict(sizes), {}, reserves, usable)
    fp8 = set(fp8)
    forms: dict[str, Form] = {}
    layered = [m for m in sizes if sizes[m].layers > 0]
    for m in layered:
        candidates = _forms_for(sizes[m], m in fp8, ahead)
        # the fastest form with which every stage that runs it fits (other layered models at their
        # most frugal; stages hold one layered model in practice)
        frugal = {o: _forms_for(sizes[o], o in fp8, ahead)[-1] for o in layered if o != m}
        chosen = candidates[-1]
        for form in candidates:
            trial = {**frugal, **forms, m: form}
            if all(_stage_bytes(n, sizes, trial) <= budget for n in stages if m in n.models):
                chosen = form
                break
        forms[m] = chosen
    for need in stages:
        needed = _stage_bytes(need, sizes, forms)
        if needed > budget:
            minimum = minimum_bytes(sizes, stages, fp8, ahead)
            raise OutOfMemory(need.stage, needed, budget, setting, suggest(minimum, usable, setting))
    everything = sum(forms.get(m, PLAIN).device_bytes(s) for m, s in sizes.items())
    shared = everything + max((n.activations for n in stages), default=0) > budget
    keep: tuple[str, ...] = ()
    if shared and len(layered) > 1:
        forms, keep = _stay_together(sizes, stages, fp8, ahead, budget, forms, layered)
    return MemoryPlan(setting, budget, dict(sizes), {m: f for m, f in forms.items() if f != PLAIN}, reserves, usable,
                      shared, keep)


def _stay_together(sizes: dict[str, ModelSize], stages: Sequence[StageNeed], fp8: set, ahead: int, budget: int,
                   forms: dict[str, Form], layered: list[str]) -> tuple[dict[str, Form], tuple[str, ...]]:
    """Taking turns moves each layered model onto the device on every call (the 19B set at 24 GiB:
    the fp8 transformer's 17.9 GiB and the text encoder's resident layers, 20.6 GiB). Instead the
    model running in most stages (the anchor; the larger one on a tie) may stay in its form while
    each other one runs beside it in a (more) streamed form: a call then copies only the others,
    less than taking turns does. The anchor streams no more layers than it does alone (H100 runs:
    streaming 5 of 48 fp8 blocks on every step cost more than moving the whole transformer once a
    call); it may keep one layer fewer in flight. Each other model takes its fastest form that
    fits every stage it runs in beside the anchor (one layer ahead if two do not fit). Returns the
    forms and the anchor; the forms as they were and no anchor when some model does not fit."""
    anchor = max(layered, key=lambda m: (sum(m in n.models for n in stages), forms.get(m, PLAIN).device_bytes(sizes[m])))
    base = forms.get(anchor, PLAIN)
    others = [m for m in layered if m != anchor]

    def fits(m, form, anchor_form):  # every stage running m, with the anchor beside it
        trial = {anchor: anchor_form, m: form}
        return all(n.activations + sum(trial[o].device_bytes(sizes[o]) for o in trial)
                   + sum(PLAIN.device_bytes(sizes[o]) for o in n.models if o in sizes and o not in trial) <= budget
                   for n in stages if m in n.models)

    def other_forms(m):
        candidates = _forms_for(sizes[m], m in fp8, ahead)
        return candidates + ([Form(candidates[-1].fp8, sizes[m].layers, 1)] if ahead > 1 else [])

    anchor_forms = [base] + ([Form(base.fp8, base.streamed, 1)] if base.streamed and base.ahead > 1 else [])
    for anchor_form in anchor_forms:
        chosen = {m: next((f for f in other_forms(m) if fits(m, f, anchor_form)), None) for m in others}
        if all(f is not None for f in chosen.values()):
            return {**forms, anchor: anchor_form, **chosen}, (anchor,)
    return forms, ()


def full_plan_check(plan: MemoryPlan, stages: Sequence[StageNeed], usable: int | None) -> None:
    """For ``--memory full`` on a GPU: every model at once plus the largest activations must fit."""
    if usable is None:
        return
    needed = sum(plan.sizes[m].total() for m in plan.sizes) + max((s.activations for s in stages), default=0)
    if needed > usable:
        worst = max(stages, key=lambda s: s.activations).stage if stages else "the run"
        raise OutOfMemory(f"{worst} (all models resident)", needed, usable, plan.setting,
                          suggest(minimum_bytes(plan.sizes, stages), usable, plan.setting))


# ------------------------------------------------------------------------------------------ residency
class Residency:
    """Which models are on the device, by last use; what must leave for another to come in."""

    def __init__(self, budget: int | None, reserves: dict[str, int] | None = None, keep: Iterable[str] = ()):
        self.budget, self.reserves, self.keep = budget, dict(reserves or {}), tuple(keep)
        self.loaded: dict[str, int] = {}  # name -> device bytes, least recently used first
        self.stage_models: set[str] = set()

    def begin_stage(self) -> None:
        self.stage_models = set()

    def touch(self, name: str) -> None:
        if name in self.loaded:
            self.loaded[name] = self.loaded.pop(name)
        self.stage_models.add(name)

    def admit(self, name: str, nbytes: int) -> list[str]:
        """Record ``name`` (``nbytes`` on the device) as loaded; return the models to move out first,
        least recently used first (models the plan keeps last), never one used in this stage. Under
        no budget, nothing moves."""
        self.loaded.pop(name, None)
        out = []
        if self.budget is not None:
            in_stage = self.stage_models | {name}
            reserve = max([self.reserves.get(m, 0) for m in in_stage] or [0])
            for other in sorted(self.loaded, key=lambda m: m in self.keep):  # stable: LRU within each kind
                if sum(self.loaded.values()) + nbytes + reserve <= self.budget:
                    break
                if other not in in_stage:
                    out.append(other)
                    del self.loaded[other]
        self.loaded[name] = nbytes
        self.stage_models.add(name)
        return out

    def evict(self, name: str) -> None:
        self.loaded.pop(name, None)

    @property
    def held(self) -> int:
        return sum(self.loaded.values())


def peak_rss() -> int | None:
    """This process's peak resident set size in bytes (VmHWM), None where /proc is not available."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
