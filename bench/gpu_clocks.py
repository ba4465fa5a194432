"""The GPUs' SM clocks while a benchmark runs: ``nvidia-smi`` sampled in the background.

    log = ClockLog(period_ms=100)      # starts sampling every GPU of the machine
    ... (the timed work; note its wall-clock windows with time.time())
    log.window(t0, t1, gpus=4)         # {gpu: {"mhz": median SM clock, "capped": share of samples at the power cap}}
    log.close()

Why: every H200 of the twenty-third session's 4-GPU machines ran the distilled pipeline's
full-size stage at its 700 W software power cap (clock event reason 0x4), each GPU at its own clock
(1,605-1,755 MHz, medians over a stage), while each block's exchange waits for the slowest of
them (docs/benchmarks-multi-gpu-3.md). The clocks and the reasons are read as nvidia-smi
reports them at each sample (its power figures are averages over about a second, too slow for
stages of half a second, so they are left out).
"""

import datetime
import shutil
import statistics
import subprocess
import tempfile

FIELDS = "timestamp,index,clocks.sm,clocks_event_reasons.active"
POWER_CAP = 0x4  # clocks_event_reasons: the software power cap holds the clock down


def parse(lines) -> list[tuple[float, int, int, int]]:
    """(seconds since the epoch, GPU index, SM MHz, event-reason bits) of each well-formed
    ``--format=csv,noheader,nounits`` line of ``FIELDS``; nvidia-smi writes its timestamps in the
    machine's local time, as ``time.time()`` reads them back through ``datetime``."""
    samples = []
    for line in lines:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            continue
        try:
            when = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((when, int(parts[1]), int(parts[2]), int(parts[3], 16)))
        except ValueError:  # a line cut short when the sampler stopped, or "[N/A]"
            continue
    return samples


def summarize(samples, t0: float, t1: float, gpus: int) -> dict[int, dict]:
    """For each of GPUs 0 .. ``gpus`` - 1 with samples in [t0, t1): the median SM clock (MHz), the
    share of samples with the power cap active, and their count."""
    out = {}
    for gpu in range(gpus):
        inside = [s for s in samples if s[1] == gpu and t0 <= s[0] < t1]
        if inside:
            out[gpu] = dict(mhz=statistics.median(s[2] for s in inside),
                            capped=sum(bool(s[3] & POWER_CAP) for s in inside) / len(inside), n=len(inside))
    return out


class ClockLog:
    """``nvidia-smi`` writing a sample of every GPU each ``period_ms`` into a temporary file."""

    def __init__(self, period_ms: int = 100):
        if shutil.which("nvidia-smi") is None:
            raise RuntimeError("--clocks needs nvidia-smi on the PATH (an NVIDIA driver)")
        self.file = tempfile.NamedTemporaryFile("w+", suffix=".csv")
        self.process = subprocess.Popen(["nvidia-smi", f"--query-gpu={FIELDS}", "--format=csv,noheader,nounits",
                                         "-lms", str(period_ms)], stdout=self.file, stderr=subprocess.DEVNULL)

    def window(self, t0: float, t1: float, gpus: int) -> dict[int, dict]:
        """``summarize`` over what the sampler has written so far."""
        self.file.flush()
        with open(self.file.name) as f:
            return summarize(parse(f), t0, t1, gpus)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.file.close()


def describe(stages: dict[str, dict]) -> str:
    """``{stage: summarize(...)}`` as text: "stage 1 MHz 1868/1845 (power cap 80%/69%), stage 2 ..."."""
    parts = []
    for stage, per_gpu in stages.items():
        if per_gpu:
            mhz = "/".join(f"{v['mhz']:.0f}" for v in per_gpu.values())
            cap = "/".join(f"{v['capped']:.0%}" for v in per_gpu.values())
            parts.append(f"{stage} MHz {mhz} (power cap {cap})")
    return ", ".join(parts)
