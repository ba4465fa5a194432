"""Collectives between CUDA graph pieces on two GPUs (tests/gpu/graph_collectives.py under torchrun):
graphed outputs bit-identical to plain ones, and the expected pieces, for our all-to-all (eager and
compiled), for the pushed gather (fastltx/runtime/push.py; also equal to NCCL's) and for a tiny
transformer split over the GPUs with compiled blocks (each self-attention exchange, "push" recorded
in the graphs; in float32, bf16 and fp8; with the video->audio partials riding in the exchanges, and
not; 3 video heads over 2 GPUs: a phantom head pads them), and ``push_usable`` (which "auto" asks
before pushing) where symmetric memory can and cannot be made. Skipped with fewer than two GPUs."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case, options", [
    ("all_to_all", []), ("compiled", []), ("push", ["--dtype", "bfloat16"]), ("push", ["--rows", "4099"]),
    ("probe", []), ("model", []), ("model", ["--exchange", "keys"]), ("model", ["--exchange", "heads"]),
    ("model", ["--exchange", "keys", "--dtype", "bfloat16"]), ("model", ["--exchange", "heads", "--riders", "on"]),
    ("model", ["--exchange", "keys", "--riders", "on"]), ("model", ["--exchange", "push", "--dtype", "bfloat16"]),
    ("model", ["--exchange", "push", "--riders", "on"]),
    ("model", ["--exchange", "push", "--dtype", "bfloat16", "--fp8"]),
    ("model", ["--exchange", "heads", "--heads", "3"]),
    ("model", ["--exchange", "heads", "--heads", "3", "--riders", "on", "--dtype", "bfloat16"])])
def test_graphed_collectives_equal_plain_ones(case, options):
    from fastltx.layers.linear import fp8_supported
    if "--fp8" in options and not fp8_supported("cuda"):
        pytest.skip("needs fp8 matmuls")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "gpu" / "graph_collectives.py"), case, "--hang-s", "240", *options]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{case} ok 0.000e+00 (group of 2 of 2)" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.skipif(torch.cuda.device_count() < 4, reason="needs four GPUs")
@pytest.mark.parametrize("case, options", [("uneven", []), ("push", ["--dtype", "bfloat16"]),
                                           ("model", ["--exchange", "heads", "--riders", "on"])])
def test_four_ranks(case, options):
    """Over 4 ranks: the push and the model (as above), and a push buffer over 4 ranks after some
    of them made one over 2: a clear error, not a hang."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
           str(ROOT / "tests" / "gpu" / "graph_collectives.py"), case, "--hang-s", "240", *options]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{case} ok 0.000e+00 (group of 4 of 4)" in proc.stdout, proc.stdout[-3000:]
