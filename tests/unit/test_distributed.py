"""Sequence parallelism, guidance (CFG) parallelism and split tiled decoding on the CPU with gloo.

One spawn of 4 processes runs every case (tests/distributed_cases.py) twice: over all 4 ranks, and
over two worlds of 2 ranks at once (the two-stage pipeline: over the pairs only); one case runs over
a world of the first 3 ranks. Each case compares
with the single-process result computed in the same process: float32, max relative error at most
1e-5 (decoded frames of the split tiled decode: identical; pipeline frames: at most 1 level).
"""

import json
import socket
import time

import pytest
import torch.multiprocessing as mp

from fastltx.pipelines.demo import demo_files
from tests import distributed_cases

SIZE = 4
BOUND = 1e-5
TIMEOUT_S = 420  # (a hang guard: ~100 s alone on 2 cores, ~170 s beside other work)
SP_CASES = ["even", "uneven_clean", "appended_mask", "fewer_tokens_than_ranks", "perturbations", "v2_appended",
            "video_only", "riders_perturbations", "riders_v2_appended", "riders_stg_whole_batch",
            "riders_isolated_whole_batch", "other_exchange", "push", "text_cache", "fewer_shards", "collectives",
            "compiled", "compiled_push", "compiled_functional"]
CFG_CASES = ["four_passes", "three_passes", "skip_step"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    folder, demo = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("demo")
    demo_files(demo)
    ctx = mp.start_processes(distributed_cases.run_all, args=(SIZE, _free_port(), str(folder), str(demo)),
                             nprocs=SIZE, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail(f"the {SIZE} processes did not finish in {TIMEOUT_S} s")
    out = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(SIZE)]
    assert "setup" not in out[0], out[0]["setup"]
    return out


def _value(results, key):
    values = [r.get(key) for r in results]
    for v in values:
        assert not isinstance(v, str), f"{key}: {v}"
    return values


@pytest.mark.parametrize("world, shards", [("w4", [4, 2, 1]), ("w2", [2, 2, 1])])
def test_small_passes_split_over_fewer_ranks(results, world, shards):
    """16 tokens with at least 4, 8, 9 tokens a shard: 4 ranks split them 4, 2 (two replicas of two
    shards) and 1 ways (every rank runs the whole pass); 2 ranks 2, 2 and 1 ways."""
    assert _value(results, f"{world}_sp_shards") == [shards] * SIZE


@pytest.mark.parametrize("world", ["w4", "w2"])
@pytest.mark.parametrize("case", SP_CASES)
def test_sequence_parallel_equals_single_process(results, world, case):
    errors = _value(results, f"{world}_sp_{case}")
    assert all(e is not None and e <= BOUND for e in errors), errors


@pytest.mark.parametrize("world", ["w4", "w2"])
@pytest.mark.parametrize("case", CFG_CASES + ["simple"])
def test_guidance_parallel_equals_single_process(results, world, case):
    key = f"{world}_cfg_{case}" if case != "simple" else f"{world}_simple"
    errors = _value(results, key)
    assert all(e is not None and e <= BOUND for e in errors), errors


@pytest.mark.parametrize("world", ["w4", "w2"])
def test_tiled_decode_split_equals_single_process(results, world):
    main_ranks = [0] if world == "w4" else [0, 2]
    for rank, r in enumerate(results):
        if rank in main_ranks:
            assert r.get(f"{world}_decode_tiled") == 0.0, r.get(f"{world}_decode_tiled")
        else:
            assert r.get(f"{world}_decode_elsewhere_empty") == 0.0, r


def test_two_stage_pipeline_over_two_processes(results):
    """Guided stage 1 (passes split), stage 2 (tokens split), split tiled decoding, result on rank 0."""
    for rank in (0, 2):
        frames, audio = _value(results, "w2_pipeline_frames")[rank], _value(results, "w2_pipeline_audio")[rank]
        assert frames <= 1 and audio <= 1e-5, (frames, audio)
    for rank in (1, 3):
        assert results[rank].get("w2_pipeline_elsewhere_none") == 0.0, results[rank]
        assert results[rank].get("w2_pipeline_elsewhere_text_encoder") == 0.0, results[rank]  # encoded on rank 0


@pytest.mark.parametrize("world", ["w4", "w2"])
def test_from_main_shares_rank_0_result_and_error(results, world):
    """The text contexts' path: computed on rank 0 only, sent to the others; its failure raised everywhere."""
    assert _value(results, f"{world}_from_main") == [0.0] * SIZE
    assert [r[f"{world}_from_main_error"] for r in results] == ["the text path failed on rank 0"] * SIZE


def test_three_ranks_where_the_heads_do_not_split(results):
    """3 ranks and 4 or 5 video heads: "auto" takes "keys" (4 heads); a named "heads" pads the heads
    with phantom ones (with and without riders; 5 heads in a batch of 2). Each equal to the single process."""
    assert [r.get("w3_exchange") for r in results] == ["keys"] * 3 + [None]
    assert [r.get(f"w3_heads{h}_plan") for r in results[:3] for h in (4, 5)] == ["heads"] * 6
    for heads in (4, 5):
        for case in (f"w3_sp_heads{heads}", f"w3_sp_heads{heads}_riders"):
            errors = _value(results[:3], case)
            assert all(e is not None and e <= BOUND for e in errors), (case, errors)
    errors = _value(results[:3], "w3_sp_auto")
    assert all(e is not None and e <= BOUND for e in errors), errors


@pytest.mark.parametrize("world, size", [("w4", 4), ("w2", 2)])
def test_push_probe_agrees_on_every_rank(results, world, size):
    """``push_usable``: every rank made its buffer (one, of ``PROBE_BYTES`` a rank) -> True everywhere,
    and the answer is kept; the last rank failing -> False on every rank (the ones that made theirs
    included: "auto" then exchanges through NCCL on all of them), and a warning on the group's first
    rank (a peer failed) and on the failing one (naming its cause), not on the others."""
    from fastltx.runtime.push import PROBE_BYTES
    assert [r[f"{world}_push_probe_made"] for r in results] == [[True, 1, size * PROBE_BYTES]] * SIZE
    assert [r[f"{world}_push_probe_again"] for r in results] == [True] * SIZE
    assert [r[f"{world}_push_probe_failed"] for r in results] == [False] * SIZE
    causes = {"w4": ["another rank could not make it", None, None, "pidfd_getfd"],
              "w2": ["another rank could not make it", "pidfd_getfd"] * 2}[world]
    for rank, (r, cause) in enumerate(zip(results, causes)):
        warned = r[f"{world}_push_probe_warning"]
        if cause is None:
            assert warned == [], (rank, warned)
        else:
            assert len(warned) == 1 and cause in warned[0], (rank, warned)
            assert 'exchanging through NCCL ("keys") instead' in warned[0]
    # the check before each rendezvous: one rank's failed allocation, or uneven counts, raise on all
    last = {"w4": [3], "w2": [1, 3]}[world]
    assert [r[f"{world}_push_check_failed"] for r in results] == [
        "RuntimeError: no handles" if rank in last else "another rank could not allocate it" for rank in range(SIZE)]
    assert [r[f"{world}_push_check_oom"] for r in results] == [
        "OutOfMemoryError: CUDA out of memory" if rank in last
        else "RuntimeError: a push buffer could not be made: another rank ran out of GPU memory" for rank in range(SIZE)]
    assert [r[f"{world}_push_check_uneven"] for r in results] == [
        "a push buffer cannot be made over this group: its ranks have"] * SIZE


@pytest.mark.parametrize("world", ["w4", "w2"])
def test_every_rank_raises_the_same_error(results, world):
    last = {"w4": [3] * 4, "w2": [1] * 4}[world]
    assert [r[f"{world}_same_error"] for r in results] == [f"bad input seen by rank {n}" for n in last]
