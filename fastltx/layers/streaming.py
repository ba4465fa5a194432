"""Running a video network over time chunk by chunk, with the result of one full pass.

A network whose layers mix only neighbouring frames (temporal convolutions padded by replicating
edge frames; norms, activations and modulations that act frame by frame) can run on consecutive
chunks of frames when every layer that looks at other frames keeps what it still needs from the
previous chunk. ``TemporalStream`` is that memory for one pass: a layer stores its carry under its
own key. ``stream=None`` is one chunk that is both first and last: the plain forward pass, through
the same code and operations (streamed results differ from it only by float rounding where an
elementwise kernel vectorises a shorter tensor differently).

A non-causal temporal convolution emits a frame only once it has seen the next one, so frames
reach the output late, and a convolution applies its end padding only when told that its input is
complete (it is in ``ending``). Ending every convolution at once would push all frames still in
flight through the network in one call, as large as one pass when the delays add up (they do: the
delay of a low-resolution stage is multiplied by each later temporal upsampling). The driver
therefore ends them a few at a time, in network order, with empty input chunks ("draining").
"""

from collections.abc import Hashable

import torch


class TemporalStream:
    """Per-pass state of a streamed forward: carried tensors by key, and which layers end now."""

    def __init__(self):
        self.carry: dict[Hashable, torch.Tensor] = {}
        self.started: set[Hashable] = set()  # sequences that have lost their first frame
        self.ending: set[Hashable] = set()  # layers whose input is complete with this call
        self.finished: set[Hashable] = set()  # layers that have ended


def frames(x: torch.Tensor) -> int:
    return x.shape[2]


def align(stream: TemporalStream | None, key: Hashable, x: torch.Tensor, n: int) -> torch.Tensor:
    """The next ``n`` frames of the sequence ``x`` continues (frames left over wait for later chunks).

    Used where a delayed path (through temporal convolutions) meets an undelayed one (a residual).
    """
    if stream is None:
        return x
    held = stream.carry.pop(key, None)
    if held is not None:
        x = torch.cat([held, x], dim=2)
    if frames(x) > n:
        stream.carry[key] = x[:, :, n:].clone()
        x = x[:, :, :n]
    return x


def drop_first_frame(stream: TemporalStream | None, key: Hashable, x: torch.Tensor) -> torch.Tensor:
    """The sequence without its very first frame (across chunks: only the first non-empty chunk loses one)."""
    if stream is None:
        return x[:, :, 1:]
    if key in stream.started or frames(x) == 0:
        return x
    stream.started.add(key)
    return x[:, :, 1:]
