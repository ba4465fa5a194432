"""The audio's work on a side stream (``AVBlock.forward_beside``), run on the CPU with stand-in
streams that log what the GPU would be told: the same numbers as ``forward`` (eager and compiled),
every side region joined, each stream waiting for the other in the right places."""

import contextlib

import pytest
import torch

from fastltx.checkpoint.factory import random_transformer, transformer_config
from fastltx.models.transformer import Perturbation
from fastltx.runtime import streams
from fastltx.runtime.streams import Beside
from tests.helpers import max_rel_error
from tests.parity.test_transformer import inputs


class FakeStream:
    """Logs the waits and the regions the side work runs in (the CPU has no CUDA streams)."""

    def __init__(self, name: str, log: list):
        self.name, self.log, self.device = name, log, torch.device("cpu")

    def wait_stream(self, other: "FakeStream") -> None:
        self.log.append(f"{self.name} waits {other.name}")


@pytest.fixture
def fake_streams(monkeypatch):
    log = []
    main, side = FakeStream("main", log), FakeStream("side", log)

    @contextlib.contextmanager
    def use(stream):
        log.append(f"on {stream.name}")
        yield
        log.append("off")
    monkeypatch.setattr(streams, "current_stream", lambda device: main)
    monkeypatch.setattr(streams, "use_stream", use)
    return side, log


def regions_balanced(log: list) -> bool:
    """Every fork (side waits main, side work) is joined (main waits side) before the next fork."""
    state = "joined"
    for entry in log:
        if entry == "side waits main":
            if state != "joined":
                return False
            state = "forked"
        elif entry == "main waits side":
            if state != "forked":
                return False
            state = "joined"
    return state == "joined"


def test_beside_holds_until_joined_and_does_nothing_without_a_stream(fake_streams):
    side, log = fake_streams
    t = torch.ones(3)
    fork = Beside(side, t)
    with fork:
        assert log == ["side waits main", "on side"]
    assert fork.held == (t,)
    fork.join()
    assert log[-1] == "main waits side" and fork.held == ()
    plain = Beside(None, t)
    with plain:
        pass
    plain.join()
    assert log[-1] == "main waits side" and len(log) == 4


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("compiled", [False, True])
@torch.no_grad()
def test_audio_beside_equals_the_plain_forward(fake_streams, monkeypatch, version, compiled):
    import torch._dynamo as dynamo
    from fastltx.runtime.compile import compile_blocks, uncompile_blocks
    side, log = fake_streams
    model = random_transformer(transformer_config(version, num_layers=3), seed=4, dtype=torch.float32)
    v, a = inputs(model, torch.float32, sigmas=(0.8, 0.3), clean_tokens=3)
    perts = [Perturbation.stg([1]), Perturbation.isolate_modalities()]
    want = model(v, a), model(v, a, perts)
    assert log == []  # no stream on the CPU by default
    monkeypatch.setattr(model, "audio_side", lambda vs, as_: side)
    if compiled:
        dynamo.reset()
        compile_blocks(model)
    try:
        got = model(v, a), model(v, a, perts)
    finally:
        if compiled:
            uncompile_blocks(model)
            dynamo.reset()
    for g, w in zip(got, want):
        assert max(max_rel_error(x, y) for x, y in zip(g, w)) <= (1e-5 if compiled else 0.0)
    # two side regions a block (the audio's attention, its feed-forward), both calls
    assert log.count("side waits main") == log.count("main waits side") == 2 * 3 * 2
    assert regions_balanced(log)
