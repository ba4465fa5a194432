"""bench/memory.py end to end on the CPU with tiny models: every mode runs in its own process and
reports its plan, stage times and frames against the uncapped run (the tiny set's decode needs
more than its models, so a budget that runs at all holds them all: streaming itself is tested in
test_offload.py)."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# One frame (one audio latent frame): the plans are those of 9 frames, whose bf16 audio decode takes
# ~15 s a call on CPUs without AVX-512 (PyTorch's slow bf16 convolutions), four calls a test.


def test_memory_bench_dry_run(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench.memory import main
    result = main(["--size", "tiny", "--device", "cpu", "--modes", "full,16m", "--sizes", "64x128", "--frames", "1",
                   "--work", str(tmp_path / "work"), "--out", str(tmp_path)])
    runs = {r["mode"]: r for r in result["runs"]}
    assert set(runs) == {"full", "16m"} and not any("error" in r for r in runs.values())
    assert "no limit" in runs["full"]["plan"] and "budget 16.0 MiB" in runs["16m"]["plan"]
    assert runs["16m"]["frames_vs_full_mean_abs"] == 0
    assert set(runs["16m"]["stages"]) == {"text", "stage 1", "upsample", "stage 2", "decode"}
    assert json.loads((tmp_path / "memory.json").read_text())["runs"][1]["mode"] == "16m"


def test_memory_bench_runs_modes_at_once(tmp_path, monkeypatch):
    """--devices: the (size, mode) processes run at once, one per listed device (here on the CPU, where
    the device names only go to CUDA_VISIBLE_DEVICES); the report is the same as one after the other."""
    sys.path.insert(0, str(ROOT))
    from bench.memory import main
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes on the CPU at once
    result = main(["--size", "tiny", "--device", "cpu", "--modes", "full,16m", "--sizes", "64x128", "--frames", "1",
                   "--work", str(tmp_path / "work"), "--out", str(tmp_path), "--devices", "0,1"])
    assert [r["mode"] for r in result["runs"]] == ["full", "16m"] and result["devices"] == "0,1"
    assert not any("error" in r for r in result["runs"]) and result["runs"][1]["frames_vs_full_mean_abs"] == 0
