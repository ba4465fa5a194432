"""Pieces of sequence parallelism that need no second process: shard planning, the partial attention
with its normaliser, and the exact log-sum-exp combination of partial attentions."""

import copy

import pytest
import torch

from fastltx.layers.attention import sdpa
from fastltx.layers.sequence_parallel import SequenceShard, partial_attention
from fastltx.runtime.distributed import Group
from tests.helpers import max_rel_error


@pytest.mark.parametrize("tokens, size, chunks", [(12, 4, (3, 3, 3, 3)), (10, 4, (3, 3, 3, 1)), (3, 4, (1, 1, 1, 0))])
def test_shard_plan_pads_at_the_end(tokens, size, chunks):
    shards = [SequenceShard.plan(tokens, Group(None, r, size)) for r in range(size)]
    assert tuple(s.local_tokens for s in shards) == chunks
    x = torch.arange(tokens).view(1, tokens, 1)
    parts = torch.cat([s.take(x, 1) for s in shards], dim=1)[0, :, 0]
    assert parts.tolist() == list(range(tokens)) + [tokens - 1] * (shards[0].padded - tokens)


def _qkv(seed, tq=5, tk=11, heads=3, d=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, heads, tq, d, generator=g), torch.randn(2, heads, tk, d, generator=g),
            torch.randn(2, heads, tk, d, generator=g))


@pytest.mark.parametrize("fused", [True, False])
def test_partial_attention_and_normaliser(fused):
    q, k, v = _qkv(0)
    out, lse = partial_attention(q, k, v, fused=fused)
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    assert max_rel_error(lse, torch.logsumexp(scores, -1)) < 1e-6
    assert max_rel_error(out, sdpa(q, k, v)) < 1e-6


def test_partial_attentions_combine_to_the_whole():
    """Keys split in three (one part empty), combined as the ranks combine them."""
    q, k, v = _qkv(1)
    parts = [partial_attention(q, k[:, :, a:b], v[:, :, a:b]) for a, b in ((0, 4), (4, 4), (4, 11))]
    outs, lses = torch.stack([o for o, _ in parts]), torch.stack([l.unsqueeze(-1) for _, l in parts])
    weights = torch.exp(lses - lses.max(dim=0).values)
    combined = (outs * weights).sum(0) / weights.sum(0)
    assert max_rel_error(combined, sdpa(q, k, v)) < 1e-6


def test_small_passes_split_by_the_threshold_of_their_blocks():
    """Compiled blocks split a one-pass step down to MIN_TOKENS_PER_RANK video tokens a rank, eager
    ones only to MIN_TOKENS_PER_RANK_EAGER (their kernel launches do not shrink with the tokens); a
    pass under MIN_TOKENS_TO_SPLIT stays whole (the smallest shard count that keeps all its tokens);
    compiled blocks through CUDA graphs have lower thresholds of their own; a model's blocks count as
    compiled once compile_blocks routed them, as graphed once graph_blocks did."""
    import types

    from fastltx.checkpoint.factory import random_transformer, transformer_config
    from fastltx.models.transformer import sharding
    from fastltx.runtime.compile import blocks_compiled, compile_blocks, uncompile_blocks

    class World:  # records the minimum asked for
        sequence = "whole"

        def sequence_for(self, tokens, minimum):
            return tokens, minimum
    video = types.SimpleNamespace(latent=torch.zeros(1, 1536, 8))
    assert sharding.sequence_group(World(), video, compiled=True) == (1536, 1536)  # below MIN_TOKENS_TO_SPLIT
    assert sharding.MIN_TOKENS_TO_SPLIT == 2048
    for tokens, minimum in ((2047, 2047), (2048, sharding.MIN_TOKENS_PER_RANK)):  # the boundary
        video = types.SimpleNamespace(latent=torch.zeros(1, tokens, 8))
        assert sharding.sequence_group(World(), video, compiled=True) == (tokens, minimum)
    video = types.SimpleNamespace(latent=torch.zeros(1, 3840, 8))  # 768x1280's stage 1
    assert sharding.sequence_group(World(), video, compiled=True) == (3840, sharding.MIN_TOKENS_PER_RANK)
    assert sharding.sequence_group(World(), video, compiled=False) == (3840, sharding.MIN_TOKENS_PER_RANK_EAGER)
    assert sharding.sequence_group(World(), None, compiled=True) == "whole"
    assert sharding.MIN_TOKENS_PER_RANK < sharding.MIN_TOKENS_PER_RANK_EAGER
    # compiled and through CUDA graphs: 512x768's stage 1 splits too, down to 384 tokens a rank
    assert sharding.MIN_TOKENS_TO_SPLIT_GRAPHED == 1536
    for tokens, minimum in ((1535, 1535), (1536, sharding.MIN_TOKENS_PER_RANK_GRAPHED)):  # the boundary
        video = types.SimpleNamespace(latent=torch.zeros(1, tokens, 8))
        assert sharding.sequence_group(World(), video, compiled=True, graphed=True) == (tokens, minimum)
        assert sharding.sequence_group(World(), video, compiled=False, graphed=True) == (tokens, tokens)  # eager
    video = types.SimpleNamespace(latent=torch.zeros(2, 1536, 8))  # a batch of two: over GRAPH_MAX_TOKENS, plain
    assert sharding.sequence_group(World(), video, compiled=True, graphed=True) == (1536, 1536)
    assert sharding.MIN_TOKENS_PER_RANK_GRAPHED < sharding.MIN_TOKENS_PER_RANK
    model = random_transformer(transformer_config("v1", num_layers=1), seed=5, dtype=torch.float32)
    assert not blocks_compiled(model)
    compile_blocks(model)
    assert blocks_compiled(model) and blocks_compiled(sharding.SequenceParallel(model, World()))
    assert not model.graphed
    model.graph_blocks()
    assert model.graphed and sharding.SequenceParallel(model, World()).graphed
    assert not copy.deepcopy(model).graphed  # a copy has no graphs
    model.graph_blocks(False)
    assert not model.graphed
    uncompile_blocks(model)
    assert not blocks_compiled(model)


class _Group:
    def __init__(self, size):
        self.size, self.rank = size, 0


@pytest.mark.parametrize("size, exchange", [(2, "keys"), (3, "heads"), (4, "heads")])
def test_auto_exchange_gathers_keys_on_two_ranks_only(size, exchange):
    """Keys and values all-gathered send as much as the Ulysses all-to-alls on 2 ranks (in one
    collective), twice as much on 4: "auto" takes them on 2 ranks only; a named exchange is kept."""
    assert SequenceShard.plan(10, _Group(size)).exchange == exchange
    for named in ("heads", "keys", "push"):
        assert SequenceShard.plan(10, _Group(size), named).exchange == named
    with pytest.raises(ValueError, match="unknown sequence exchange"):
        SequenceShard.plan(10, _Group(size), "ring")


@pytest.mark.parametrize("device, available, usable, size, exchange", [
    ("cuda", True, True, 2, "push"), ("cuda", True, False, 2, "keys"), ("cuda", False, True, 2, "keys"),
    ("cpu", True, True, 2, "keys"), (None, True, True, 2, "keys"), ("cuda", True, True, 4, "heads")])
def test_auto_exchange_pushes_keys_between_two_gpus_with_peer_access(monkeypatch, device, available, usable, size,
                                                                    exchange):
    """"auto" on 2 ranks: "push" where the tensors are on CUDA, every two GPUs reach each other
    (``push_available``, the same answer on every rank of a machine) and every rank of the group made
    symmetric memory (``push_usable``, asked only then), else "keys". A named "push" asks nothing."""
    from fastltx.layers import sequence_parallel
    asked = []
    monkeypatch.setattr(sequence_parallel, "push_available", lambda: available)
    monkeypatch.setattr(sequence_parallel, "push_usable", lambda group, where: asked.append(where) or usable)
    assert SequenceShard.plan(10, _Group(size), device=device).exchange == exchange
    assert asked == ([device] if available and device == "cuda" and size == 2 else [])
    assert SequenceShard.plan(10, _Group(size), "push", device=device).exchange == "push"
    assert len(asked) <= 1


@pytest.mark.parametrize("gpus, world, peers, expected", [
    (2, 2, True, True), (4, 2, True, True), (2, 4, True, False), (2, 2, False, False), (1, 1, True, False)])
def test_push_needs_peer_access_and_one_machine(monkeypatch, gpus, world, peers, expected):
    """``push_available``: at least 2 visible GPUs that all reach each other, and a process world no
    larger than this machine's GPU count (larger, it spans machines, where there is no peer memory)."""
    from fastltx.runtime import push
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "can_device_access_peer", lambda i, j: peers)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: world)
    assert push.push_available.__wrapped__() is expected


@pytest.mark.parametrize("where", ["empty", "rendezvous"])
def test_push_without_symmetric_memory_names_the_other_exchanges(monkeypatch, where):
    """Where CUDA symmetric memory cannot be made (a container without the IPC that maps the peers'
    memory), the first push raises an error saying which exchanges run without it."""
    import torch.distributed._symmetric_memory as symm_mem

    from fastltx.runtime import push

    entered = []

    def fail(*args, **kwargs):
        entered.append(args)
        raise RuntimeError("pidfd_getfd: Operation not permitted")

    def check_even(group_name, device, failed=None):  # (one rank: its own allocation decides, as in the real one)
        if failed is not None:
            raise push._unmade(failed) from failed
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(push, "_check_even", check_even)
    monkeypatch.setattr(symm_mem, "enable_symm_mem_for_group", lambda group_name: None, raising=False)
    monkeypatch.setattr(symm_mem, "empty", fail if where == "empty" else lambda *a, **k: torch.empty(0))
    monkeypatch.setattr(symm_mem, "rendezvous", fail)
    held = []
    with pytest.raises(push.SymmetricMemoryError,
                       match=r'--sequence-exchange keys \(or heads\).*sequence_exchange="keys"') as caught:
        push._new_buffer(held, "g", 16, 2, torch.device("cuda", 0))
    assert "pidfd_getfd" in str(caught.value) and "pidfd_getfd" in caught.value.why and held == []
    assert len(entered) == 1  # the one failing call (after a failed allocation no rendezvous is entered)


@pytest.mark.parametrize("kind", ["linear", "fp8", "fp8_weight"])
def test_linear_rows_are_those_features_of_the_whole_product(kind):
    """The key exchanges project keys and values first from rows of the fused q/k/v weight, the
    queries after (``linear_rows``): the same features as the whole layer's, for each linear kind."""
    from torch import nn

    from fastltx.layers.linear import Fp8Linear, Fp8WeightLinear, linear_rows
    torch.manual_seed(0)
    layer = nn.Linear(32, 48)
    if kind != "linear":
        layer = (Fp8Linear if kind == "fp8" else Fp8WeightLinear)(layer)
    x = torch.randn(2, 5, 32)
    whole = layer(x)
    for start, stop in ((0, 16), (16, 48)):
        assert max_rel_error(linear_rows(layer, x, start, stop), whole[..., start:stop]) < 1e-6


@pytest.mark.parametrize("kind", ["linear", "linear_no_bias", "fp8", "fp8_weight"])
def test_linear_rows_read_the_ordering_token(kind):
    """``linear_rows(..., after)``: with a zero the same product; the product reads ``after`` (a
    nonzero one changes it), which is what orders it after the push's start in compiled code."""
    from torch import nn

    from fastltx.layers.linear import Fp8Linear, Fp8WeightLinear, linear_rows
    torch.manual_seed(1)
    layer = nn.Linear(32, 48, bias=kind != "linear_no_bias")
    if kind.startswith("fp8"):
        layer = (Fp8Linear if kind == "fp8" else Fp8WeightLinear)(layer)
    x = torch.randn(2, 5, 32)
    plain = linear_rows(layer, x, 16, 48)
    assert torch.equal(linear_rows(layer, x, 16, 48, torch.zeros(1)), plain)
    assert not torch.allclose(linear_rows(layer, x, 16, 48, torch.ones(1)), plain)


@pytest.mark.parametrize("batch, tokens, size, auto", [
    (1, 3840, 4, True),    # 768x1280's stage 1 on 4 ranks: 960 a rank
    (1, 3840, 2, True),    # on 2: 1,920 a rank
    (1, 8192, 4, True),    # exactly RIDERS_MAX_TOKENS_PER_RANK
    (1, 8193, 4, False),   # one token more: 2,049 a rank (padded)
    (1, 15360, 4, False),  # stage 2 on 4 ranks: 3,840 a rank
    (2, 3840, 2, False),   # two passes batched: 3,840 batch x tokens a rank
])
def test_riders_auto_only_for_small_shards(batch, tokens, size, auto):
    """``sequence_riders`` "auto" lets the partials ride only on shards of at most
    RIDERS_MAX_TOKENS_PER_RANK batch x tokens; True and False hold whatever the size."""
    import types

    from fastltx.models.transformer import sharding
    assert sharding.RIDERS_MAX_TOKENS_PER_RANK == 2048
    video = types.SimpleNamespace(latent=torch.zeros(batch, tokens, 8))
    group = _Group(size)
    assert sharding.plan(video, group, 32, "heads", "auto").riders is auto
    assert sharding.plan(video, group, 32, "heads", "auto").carry is auto
    assert sharding.plan(video, group, 32, "heads", True).riders is True
    assert sharding.plan(video, group, 32, "heads", False).riders is False
    with pytest.raises(ValueError, match="sequence_riders"):
        sharding.plan(video, group, 32, "heads", "on")


@pytest.mark.parametrize("size, auto", [(2, "keys"), (3, "keys"), (4, "heads"), (6, "keys"), (8, "heads")])
def test_auto_gathers_keys_where_the_heads_do_not_split(size, auto):
    """32 video heads over 3 (or 6) ranks: "auto" gathers the keys and values (any rank count);
    a named "heads" is taken as named (phantom heads pad the split: tests/distributed_cases.py)."""
    import types

    from fastltx.models.transformer import sharding
    video = types.SimpleNamespace(latent=torch.zeros(1, 3840, 8))
    group = _Group(size)
    assert sharding.plan(video, group, 32, "auto").exchange == auto  # (2 ranks off CUDA: "keys" anyway)
    assert sharding.exchange_for("auto", size, 32) == auto  # (what benchmarks and tests name)
    assert sharding.exchange_for("heads", size, 32) == "heads"
    assert sharding.plan(video, group, 32, "heads").exchange == "heads"


def test_push_probe_counts_only_symmetric_memory_failures(monkeypatch):
    """``push_usable`` refuses to run inside compiled code (it is a collective that reads its answer
    on the host), and an error other than a failure to make symmetric memory (out of memory, say)
    raises instead of turning into "keys" for good."""
    from types import SimpleNamespace

    from fastltx.runtime import push
    from fastltx.runtime.distributed import Group
    group = Group(SimpleNamespace(group_name="probe-test"), 0, 2)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    with pytest.raises(RuntimeError, match="push_usable runs eagerly"):
        push.push_usable(group, "cpu")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)

    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")
    monkeypatch.setattr(push, "_buffer", oom)
    with pytest.raises(torch.OutOfMemoryError):
        push.push_usable(group, "cpu")
    assert "probe-test" not in push._usable


def test_push_buffer_out_of_memory_is_agreed_on_before_any_rendezvous(monkeypatch):
    """Running out of memory while allocating a push buffer goes to the agreement like any failed
    allocation (which raises it on this rank: tests/unit/test_distributed.py), and no rendezvous is
    entered."""
    import torch.distributed._symmetric_memory as symm_mem

    from fastltx.runtime import push

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")
    seen = []

    def check_even(group_name, device, failed=None):
        seen.append(failed)
        raise failed
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(push, "_check_even", check_even)
    monkeypatch.setattr(symm_mem, "enable_symm_mem_for_group", lambda group_name: None, raising=False)
    monkeypatch.setattr(symm_mem, "empty", oom)
    monkeypatch.setattr(symm_mem, "rendezvous", lambda *a: pytest.fail("rendezvous entered"))
    with pytest.raises(torch.OutOfMemoryError):
        push._new_buffer([], "g", 16, 2, torch.device("cuda", 0))
    assert len(seen) == 1 and isinstance(seen[0], torch.OutOfMemoryError)
