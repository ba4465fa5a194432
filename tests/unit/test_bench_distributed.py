"""bench/distributed.py's smoke mode under torchrun: two CPU processes over gloo, a tiny bf16 transformer;
the distilled and guided steps on one process and on both must agree (rounding only). Also the
argument checks and the profiler's kernel summary (on made-up events: no CUDA here)."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 180


def test_arguments():
    from bench.distributed import parse_args
    args = parse_args([])
    assert (args.sizes, args.reps, args.compile, args.profile_dir, args.profile_gpus) == (
        [(768, 1280), (1024, 1536)], 3, False, None, None)
    assert parse_args(["--sizes", "384x640"]).sizes == [(384, 640)]  # 12 x 20 latent rows and columns
    for bad in ("384x600", "384", "axb"):
        with pytest.raises(SystemExit):
            parse_args(["--sizes", bad])
    assert parse_args(["--counts", "4,1,4"]).counts == [1, 4] and parse_args([]).counts is None
    for bad in ("0,4", "one"):
        with pytest.raises(SystemExit):
            parse_args(["--counts", bad])


def test_timeline_summary_splits_idle_time_by_cause():
    from bench.timeline import timeline_summary

    def kernel(name, ts, dur, corr):
        return dict(cat="kernel", name=name, ts=ts, dur=dur, args=dict(correlation=corr))

    def launch(ts, dur, corr):
        return dict(cat="cuda_runtime", name="cudaLaunchKernel", ts=ts, dur=dur, args=dict(correlation=corr))
    events = [launch(0, 5, 1), kernel("gemm", 10, 100, 1),  # busy 10-110
              launch(20, 5, 2), kernel("elementwise", 100, 30, 2),  # overlaps: busy to 130
              launch(200, 10, 3), kernel("gemm", 215, 85, 3),  # launched at 210, after the GPU idled at 130: host
              launch(230, 5, 4), kernel("ncclDevKernel_AllToAll", 400, 100, 4),  # launched early: other
              dict(cat="cpu_op", name="aten::mm", ts=0, dur=600)]
    out = timeline_summary(dict(traceEvents=events), calls=2)
    assert out.pop("kinds") == pytest.approx(dict(gemm=0.0925, other=0.015, nccl=0.05))
    assert out == pytest.approx(dict(span=0.245, busy=0.1525, nccl=0.05, nccl_beside=0.0, idle_host=0.0425,
                                     idle_other=0.05, kernels=2))
    assert out["span"] == pytest.approx(out["busy"] + out["idle_host"] + out["idle_other"])
    assert timeline_summary(dict(traceEvents=[]))["span"] == 0.0


def test_timeline_summary_measures_the_collectives_beside_other_kernels():
    """NCCL time during which another kernel ran on another stream: the union of the others, once."""
    from bench.timeline import timeline_summary
    events = [dict(cat="kernel", name=name, ts=ts, dur=dur, args={}) for name, ts, dur in (
        ("ncclDevKernel_AllToAll", 0, 100),  # beside: 20-50 (two kernels overlapping) and 80-100
        ("gemm", 20, 20), ("elementwise", 30, 20), ("gemm", 80, 40),
        ("ncclDevKernel_AllGather", 150, 10))]  # alone
    out = timeline_summary(dict(traceEvents=events))
    assert out["nccl"] == pytest.approx(0.11) and out["nccl_beside"] == pytest.approx(0.05)


def test_kernel_summary_sorts_kernels_by_kind():
    from bench.distributed import kernel_summary

    def event(key, us, device=DeviceType.CUDA, old_torch=False, **kw):
        time = {"self_cuda_time_total" if old_torch else "self_device_time_total": us}
        return SimpleNamespace(key=key, device_type=device, **time, **kw)
    events = [event("ncclDevKernel_AllToAll_RING_LL(ncclDevKernelArgsStorage<4096ul>)", 3000),
              event("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", 2000),
              event("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", 1000, old_torch=True),
              event("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm>", 500),
              event("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<cutlass::bfloat16_t>>", 4000),
              event("_partial_attention_kernel", 250),
              event("triton_poi_fused_add_mul_0", 125),
              event("Memcpy DtoD (Device -> Device)", 125),
              event("aten::mm", 9999, device=DeviceType.CPU),  # host side: its kernels are counted already
              event("CompiledFunction", 9999, is_user_annotation=True)]  # a range spanning kernels
    out = kernel_summary(events)
    assert out == dict(nccl=3.0, attention=4.25, gemm=3.5, other=0.25, total=11.0)


def test_smoke_run_under_torchrun(tmp_path):
    out, prof = tmp_path / "results.json", tmp_path / "prof"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "bench" / "distributed.py"), "--smoke", "--sizes", "64x64", "--reps", "1", "--graphs",
           "--profile-dir", str(prof), "--json", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the smoke run did not finish in {TIMEOUT_S} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["world"] == 2 and results["smoke"] and results["compiled"] is False
    rows = results["rows"]
    assert [(r["step"].split(" (")[0], r["gpus"]) for r in rows] == [
        ("distilled step 64x64", 1), ("distilled step 64x64", 2), ("distilled step graphed 64x64", 1),
        ("distilled step graphed 64x64", 2), ("guided step 64x64", 1),
        ("guided step 64x64", 2)]
    for row in rows:
        assert row["ms"] > 0 and row["first_s"] > 0 and row["compiled"] is False
        assert row["rel_l2"] < 2e-2, row  # bf16 rounding
        assert "kernels_ms" not in row  # no profiling without CUDA
        if row["gpus"] == 1:
            assert row["speedup"] == 1.0 and row["rel_l2"] == 0.0
        assert proc.stdout.count(f"{row['step']:<34} {row['gpus']} GPU") == 1, proc.stdout
        if "graphed" in row["step"]:  # no graphs without CUDA: the plain path, the same numbers
            assert row["identical_to_plain"] and row["rel_l2_to_plain"] == 0.0 and row["vs_plain"] > 0, row
    assert not prof.exists()
