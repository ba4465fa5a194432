"""bench/distributed_pipeline.py's smoke mode under torchrun: three CPU processes over gloo, tiny float32
models, the distilled pipeline on one process and on the first two (``--gpus 2``: a World of a subset
of the ranks, the third one waits); the two-process frames must match the one-process frames."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 180


def test_arguments():
    from bench.distributed_pipeline import parse_args
    args = parse_args([])
    assert (args.sizes, args.frames, args.reps, args.compile, args.gpus) == ("768x1280,1024x1536", 121, 3, False, None)
    smoke = parse_args(["--smoke"])
    assert (smoke.sizes, smoke.frames, smoke.reps) == ("64x128", 9, 1)
    assert args.exchanges == ["auto"] and parse_args(["--exchanges", "auto,heads"]).exchanges == ["auto", "heads"]
    with pytest.raises(SystemExit):
        parse_args(["--exchanges", "ring"])
    only = parse_args(["--graphs-only"])  # the graphed runs without the plain ones
    assert (args.graphs, args.graphs_only, only.graphs, only.graphs_only) == (False, False, True, True)
    assert args.hang_s is None and parse_args(["--hang-s", "30"]).hang_s == 30.0
    assert args.riders == ["auto"] and parse_args(["--riders", "on,off,auto"]).riders == [True, False, "auto"]
    assert not args.gc_freeze and parse_args(["--gc-freeze"]).gc_freeze
    with pytest.raises(SystemExit):
        parse_args(["--riders", "maybe"])


def test_smoke_run_under_torchrun(tmp_path):
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3",
           str(ROOT / "bench" / "distributed_pipeline.py"), "--smoke", "--gpus", "2", "--graphs",
           "--funcol-plain", "--exchanges", "heads,keys", "--json", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the smoke run did not finish in {TIMEOUT_S} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for variant in ("", " graphed", " funcol"):
        assert proc.stdout.count(f"64x128 1 GPU(s){variant}:") == 1, proc.stdout
        for exchange in ("heads", "keys"):
            assert proc.stdout.count(f"64x128 2 GPU(s){variant} {exchange}:") == 1, proc.stdout
    results = json.loads(out.read_text())
    assert results["world"] == 3 and results["smoke"] and results["frames"] == 9
    variants = ((False, False), (True, False), (False, True))
    assert [(r["size"], r["gpus"], r["funcol"], r["graphs"], r["exchange"]) for r in results["rows"]] == [
        ("64x128", 1, funcol, graphs, None) for funcol, graphs in variants] + [
        ("64x128", 2, funcol, graphs, exchange) for funcol, graphs in variants for exchange in ("heads", "keys")]
    # no CUDA graphs on the CPU (the plain path; the "funcol" rows: the functional collectives): each
    # (variant, exchange) is its own series, against its plain twin
    for variant in variants:
        one = [r for r in results["rows"][:3] if (r["funcol"], r["graphs"]) == variant]
        for exchange in ("heads", "keys"):
            check_series(one + [r for r in results["rows"][3:] if (r["funcol"], r["graphs"], r["exchange"])
                                == (*variant, exchange)])
    plain_of = {(r["gpus"], r["exchange"]): r for r in results["rows"] if not r["funcol"] and not r["graphs"]}
    for row in results["rows"]:
        plain = plain_of[row["gpus"], row["exchange"]]
        if row is plain:
            assert "steps_vs_plain" not in plain
            continue
        steps = plain["stages"]["stage 1"] + plain["stages"]["stage 2"]
        assert row["steps_vs_plain"] == pytest.approx((row["stages"]["stage 1"] + row["stages"]["stage 2"]) / steps)


def check_series(rows: list) -> None:
    one, *several = rows
    assert [r["gpus"] for r in rows] == [1, 2]
    for row in rows:
        assert set(row["stages"]) == {"text", "stage 1", "upsample", "stage 2", "decode", "other"}
        assert len(row["totals"]) == 1 and row["total"] > 0 and row["cold_s"] > 0
        assert row["total"] >= sum(v for k, v in row["stages"].items() if k != "other")
    assert one["speedup"] == 1.0 == one["steps_speedup"] == one["step_speedup"]
    for row in rows:  # the 8 + 3 transformer steps, timed one by one, within their stages
        assert row["step_s"]["steps"] == 11
        assert 0 < row["step_s"]["stage 1"] <= row["stages"]["stage 1"]
        assert 0 < row["step_s"]["stage 2"] <= row["stages"]["stage 2"]
        first = row["first_step_s"]  # stage 1's first step and the median of its later ones
        assert 0 < first["first"] and 0 < first["later"] and first["first"] + first["later"] <= row["step_s"]["stage 1"]
    assert "rank_stages" not in one
    for row in several:  # every rank's text and stage-1 times; rank 0's are the row's (one timed call)
        assert len(row["rank_stages"]) == 2 and all(r["text"] > 0 and r["stage 1"] > 0 for r in row["rank_stages"])
        assert row["rank_stages"][0] == pytest.approx({k: row["stages"][k] for k in ("text", "stage 1")})
    for row in several:
        assert row["speedup"] == pytest.approx(one["total"] / row["total"])
        steps = lambda r: r["stages"]["stage 1"] + r["stages"]["stage 2"]  # noqa: E731
        assert row["steps_speedup"] == pytest.approx(steps(one) / steps(row))
        gpu_steps = lambda r: r["step_s"]["stage 1"] + r["step_s"]["stage 2"]  # noqa: E731
        assert row["step_speedup"] == pytest.approx(gpu_steps(one) / gpu_steps(row))
        c = row["vs_1_gpu"]
        assert "error" not in c, c
        assert c["frames_max"] <= 1 and c["audio_max"] <= 1e-5, c  # float32: rounding only
        assert c["frame_std_ref"] > 1  # not a blank video


def test_a_failed_single_gpu_run_is_reported_and_the_size_goes_on():
    import torch

    from bench.distributed_pipeline import line, record, single_run, table

    def out_of_memory(**kwargs):
        raise RuntimeError("not enough GPU memory for stage 2")
    failed = single_run(out_of_memory, torch.device("cpu"), {}, reps=1)
    assert "not enough GPU memory for stage 2" in failed["error"]
    one, two = dict(size="64x128", gpus=1), dict(size="64x128", gpus=2)
    record(one, failed, None)
    frames, audio = torch.zeros(1, 2, 2, 3, dtype=torch.uint8), torch.zeros(2, 4)
    record(two, dict(total=2.0, totals=[2.0], stages={"text": 1.0, "other": 1.0}, frames=frames, audio=audio,
                     peak_gib=float("nan"), cold_s=3.0), None)  # no 1-GPU result to compare with
    assert two["speedup"] is None and "vs_1_gpu" not in two and "frames" not in two
    assert line(one).endswith("FAILED RuntimeError: not enough GPU memory for stage 2")
    assert "2000 ms (x-; cold 3.0 s" in line(two)
    rows = table(dict(frames=9, reps=1, rows=[one, two])).splitlines()
    assert "failed: RuntimeError" in rows[2] and rows[3].split()[:2] == ["64x128", "2"]
