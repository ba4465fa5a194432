"""Strict loading of one component from a checkpoint file.

The model is built on the meta device, the file's keys are mapped to the model's names by the
component's own key map, and every expected tensor must be present with the right shape; only then
are tensors read (memory-mapped by safetensors) and assigned. A model with a tensor left on the meta
device is never returned.
"""

from collections.abc import Callable

import torch
from safetensors import safe_open
from torch import nn

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


def load_component(build: Callable[[], nn.Module], header: SafetensorsHeader, key_map: KeyMap, component: str,
                   device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                   ignored: Callable[[str], bool] = lambda k: False,
                   adjust: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> nn.Module:
    """Build ``build()`` on meta, check the file strictly, then read and assign its tensors.

    Floating-point tensors are cast to ``dtype`` (kept as stored when None). ``adjust`` sees the
    state dict as stored (e.g. to fuse LoRAs from the stored values) before that cast.
    """
    with torch.device("meta"):
        model = build()
    mapping = match_keys(header, model, key_map, component, ignored)
    device = torch.device(device)
    state = {}
    with safe_open(header.path, framework="pt", device="cpu" if device.type == "meta" else str(device)) as f:
        for key, name in mapping.items():
            state[key] = f.get_tensor(name)
    if adjust is not None:
        state = adjust(state)
    if dtype is not None:
        state = {k: t.to(dtype) if t.is_floating_point() else t for k, t in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # only a bug in a model definition can get here; never hand out such a model
        raise RuntimeError(f"{header.path}: {component}: tensors left uninitialised: {_few(left)}")
    return model.eval().requires_grad_(False)
