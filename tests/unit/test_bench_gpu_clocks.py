"""bench/gpu_clocks.py: nvidia-smi's samples parsed, summarised over a window, and the distributed
pipeline bench's per-stage windows (``stage_clocks``)."""

import datetime

import pytest

from bench.distributed_pipeline import parse_args, stage_clocks
from bench.gpu_clocks import ClockLog, describe, parse, summarize


def _line(seconds: float, gpu: int, mhz: int, reasons: int) -> str:
    when = datetime.datetime.fromtimestamp(seconds).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    return f"{when}, {gpu}, {mhz}, 0x{reasons:016x}"


def test_parse_reads_local_timestamps_and_skips_broken_lines():
    t = 1_795_813_800.25
    samples = parse([_line(t, 0, 1980, 0), _line(t + 0.1, 1, 1605, 0x4), "2026/11/27 21:11", "[N/A], 0, 1, 0x0", ""])
    assert len(samples) == 2
    assert samples[0][0] == pytest.approx(t, abs=1e-3) and samples[0][1:] == (0, 1980, 0)
    assert samples[1][1:] == (1, 1605, 4)


def test_summarize_takes_the_window_and_the_gpus_asked_for():
    t = 1_000.0
    samples = [(t + 0.1 * i, gpu, mhz, reasons) for i, (gpu, mhz, reasons) in enumerate([
        (0, 1900, 0), (1, 1700, 4), (0, 1600, 4), (1, 1650, 4), (0, 1500, 4), (2, 1000, 0)])]
    samples.append((t - 1, 0, 100, 0))  # before the window
    out = summarize(samples, t, t + 0.55, gpus=2)
    assert out == {0: dict(mhz=1600, capped=2 / 3, n=3), 1: dict(mhz=1675.0, capped=1.0, n=2)}
    assert summarize(samples, t + 5, t + 6, gpus=2) == {}
    assert describe({"stage 1": out, "stage 2": {}}) == "stage 1 MHz 1600/1675 (power cap 67%/100%)"


def test_stage_clocks_walks_the_stages_from_each_calls_start():
    class Log:  # answers with the window it was asked for
        def window(self, t0, t1, gpus):
            return {g: dict(mhz=t0 * 10 + g, capped=t1 - t0, n=1) for g in range(gpus)}
    stages = {"text": 0.5, "stage 1": 1.0, "upsample": 0.25, "stage 2": 2.0, "decode": 1.0}
    runs = [(0, stages, None, None, 0, [], [], start) for start in (100.0, 200.0, 300.0)]
    out = stage_clocks(runs, Log(), gpus=2)
    assert out["stage 1"] == {0: dict(mhz=2005.0, capped=1.0), 1: dict(mhz=2006.0, capped=1.0)}
    assert out["stage 2"] == {0: dict(mhz=2017.5, capped=2.0), 1: dict(mhz=2018.5, capped=2.0)}


def test_clocks_flag(monkeypatch):
    assert not parse_args([]).clocks
    monkeypatch.setattr("bench.distributed_pipeline.shutil.which", lambda name: None)
    with pytest.raises(SystemExit):  # no nvidia-smi: refused before any work
        parse_args(["--clocks"])
    monkeypatch.setattr("bench.distributed_pipeline.shutil.which", lambda name: "/usr/bin/" + name)
    assert parse_args(["--clocks"]).clocks


def test_clock_log_needs_nvidia_smi(monkeypatch):
    monkeypatch.setattr("bench.gpu_clocks.shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match="nvidia-smi"):
        ClockLog()
