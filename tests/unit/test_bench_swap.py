"""bench/swap.py on the CPU: both allocator settings run in their own process and time every hand-over."""

import sys
from pathlib import Path


def test_swap_bench_dry_run(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.swap import main
    results = main(["--device", "cpu", "--gib", "0.01,0.02", "--cap-gib", "0", "--turns", "3", "--out", str(tmp_path)])
    assert [r["expandable"] for r in results] == [False, True]
    assert all(len(r["handovers_s"]) == 3 and r["copy_gb_per_s"] > 0 for r in results)
    assert (tmp_path / "swap.json").exists()
