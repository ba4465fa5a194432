"""Strict loading of one component from a checkpoint file.

The model is built on the meta device, the file's keys are mapped to the model's names by the
component's own key map, and every expected tensor must be present with the right shape; only then
are tensors read (through a memory map, each moved once, its pages released after the move) and
assigned. A model with a tensor left on the meta device is never returned.
"""

from collections.abc import Callable

import torch
from torch import nn

from fastltx.checkpoint.mapped import MappedFile
from fastltx.checkpoint.safetensors_file import CheckpointError, SafetensorsHeader

KeyMap = Callable[[str], str | None]  # file key -> model key, or None when the key is not this component's


def _few(keys, n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def match_keys(header: SafetensorsHeader, model: nn.Module, key_map: KeyMap, component: str,
               ignored: Callable[[str], bool] = lambda k: False) -> dict[str, str]:
    """Map file keys to the (meta) model's state-dict keys; raise on missing, unexpected or mis-shaped."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapping: dict[str, str] = {}
    for name in header.tensors:
        key = key_map(name)
        if key is None or (key not in expected and ignored(key)):
            continue
        mapping[key] = name
    missing = expected.keys() - mapping.keys()
    if missing:
        raise CheckpointError(header.path, f"{component}: {len(missing)} missing tensor(s): {_few(missing)}")
    unexpected = mapping.keys() - expected.keys()
    if unexpected:
        raise CheckpointError(header.path, f"{component}: {len(unexpected)} unexpected tensor(s): "
                                           f"{_few(mapping[k] for k in unexpected)}")
    wrong = [f"{mapping[k]} has shape {list(header.tensors[mapping[k]].shape)}, expected {list(s)}"
             for k, s in expected.items() if header.tensors[mapping[k]].shape != s]
    if wrong:
        raise CheckpointError(header.path, f"{component}: shape mismatch: {_few(wrong, 3)}")
    return mapping


class ComponentReader:
    """A component built on the meta device and matched strictly against its file(s), whose tensors
    can be read all at once (``load``) or part by part (``read`` / ``assign`` / ``release``, for
    loaders that place or convert one layer at a time). Tensors come from a memory map: ``read``
    returns CPU views of the file, and moving them is the only copy."""

    def __init__(self, model: nn.Module, sources: dict[str, tuple[MappedFile, str]], component: str, path: str):
        self.model, self.sources, self.component, self.path = model, sources, component, path

    def keys(self, prefix: str = "") -> list[str]:
        return [k for k in self.sources if k.startswith(prefix)]

    def read(self, keys) -> dict[str, torch.Tensor]:
        """CPU tensors viewing the file (no copy)."""
        return {k: self.sources[k][0].tensor(self.sources[k][1]) for k in keys}

    def release(self, keys) -> None:
        """Let the kernel drop the file pages of these tensors (after they were moved elsewhere)."""
        by_file: dict[int, tuple[MappedFile, list[str]]] = {}
        for k in keys:
            f, name = self.sources[k]
            by_file.setdefault(id(f), (f, []))[1].append(name)
        for f, names in by_file.values():
            f.release(names)

    def assign(self, state: dict[str, torch.Tensor]) -> None:
        """Assign tensors (by state-dict key) into the model, replacing the meta ones."""
        unknown = state.keys() - self.sources.keys()
        if unknown:
            raise RuntimeError(f"{self.component}: not tensors of this component: {_few(unknown)}")
        self.model.load_state_dict(state, strict=False, assign=True)

    def finish(self) -> nn.Module:
        """The model, once every tensor was assigned (never hand out a model with a meta tensor)."""
        left = [n for n, t in [*self.model.named_parameters(), *self.model.named_buffers()] if t.is_meta]
        if left:  # only a bug in a model definition or a loader can get here
            raise RuntimeError(f"{self.path}: {self.component}: tensors left uninitialised: {_few(left)}")
        return self.model.eval().requires_grad_(False)

    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
             adjust: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> nn.Module:
        """Read every tensor onto ``device`` (floating-point ones cast to ``dtype``; ``adjust`` sees
        them as stored, before the cast) and assign them. On the CPU the parameters view the file."""
        device = torch.device("cpu" if torch.device(device).type == "meta" else device)
        moved = device.type != "cpu"
        cast = lambda t: t.to(dtype) if dtype is not None and t.is_floating_point() else t  # noqa: E731
        state = {}
        for key in self.sources:
            t = self.read([key])[key]
            if moved:
                t = t.to(device)
                self.release([key])
            state[key] = t if adjust is not None else cast(t)
        if adjust is not None:
            state = {k: cast(t) for k, t in adjust(state).items()}
        self.model.load_state_dict(state, strict=True, assign=True)
        return self.finish()


def open_component(build: Callable[[], nn.Module], header: SafetensorsHeader, key_map: KeyMap, component: str,
                   ignored: Callable[[str], bool] = lambda k: False) -> ComponentReader:
    """Build ``build()`` on meta and check the file strictly against it; nothing is read yet."""
    with torch.device("meta"):
        model = build()
    mapping = match_keys(header, model, key_map, component, ignored)
    mapped = MappedFile(header)
    return ComponentReader(model, {key: (mapped, name) for key, name in mapping.items()}, component, header.path)


def load_component(build: Callable[[], nn.Module], header: SafetensorsHeader, key_map: KeyMap, component: str,
                   device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                   ignored: Callable[[str], bool] = lambda k: False,
                   adjust: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> nn.Module:
    """Build ``build()`` on meta, check the file strictly, then read and assign its tensors.

    Floating-point tensors are cast to ``dtype`` (kept as stored when None). ``adjust`` sees the
    state dict as stored (e.g. to fuse LoRAs from the stored values) before that cast.
    """
    return open_component(build, header, key_map, component, ignored).load(device, dtype, adjust)


def stored_bytes(header: SafetensorsHeader, key_map: KeyMap, dtype: torch.dtype | None = None,
                 ignored: Callable[[str], bool] = lambda k: False) -> int:
    """Bytes of a component's tensors as loaded (floating-point ones in ``dtype``), from the header alone."""
    from fastltx.checkpoint.mapped import DTYPES
    total = 0
    for name, info in header.tensors.items():
        key = key_map(name)
        if key is None or ignored(key):
            continue
        stored = DTYPES.get(info.dtype, torch.uint8)
        target = dtype if dtype is not None and stored.is_floating_point else stored
        total += info.numel * torch.empty((), dtype=target).element_size()
    return total
