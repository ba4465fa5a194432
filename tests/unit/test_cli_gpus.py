"""``fastltx generate --gpus N`` and ``load_pipeline(world_size=N)``: checks before anything starts,
the torchrun command, and the relaunch of the same command line (no process is actually started)."""

import sys

import pytest
import torch

import fastltx.cli as cli
import fastltx.runtime.distributed as distributed
from fastltx.cli import main, process_count
from fastltx.pipelines import InputError, load_pipeline


@pytest.mark.parametrize("gpus, launched, device, message", [
    (0, 1, "cpu", "--gpus must be at least 1"),
    (2, 3, "cpu", "--gpus 2, but torchrun started 3 processes"),
    (2, 1, "cuda:1", "not a numbered GPU"),
    (64, 1, "cuda", "--gpus 64 asked for, but"),
])
def test_bad_gpu_counts_are_input_errors(gpus, launched, device, message):
    with pytest.raises(InputError, match=message):
        process_count(gpus, launched, torch.device(device))


def test_process_count_defaults_to_what_torchrun_started():
    assert process_count(None, 1, torch.device("cpu")) == 1
    assert process_count(None, 4, torch.device("cpu")) == 4
    assert process_count(2, 1, torch.device("cpu")) == 2


def test_torchrun_command_runs_this_package():
    cmd = distributed.torchrun_command(3, ["generate", "--prompt", "a b", "--gpus", "3"])
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3"]
    assert cmd[5:] == ["-m", "fastltx", "generate", "--prompt", "a b", "--gpus", "3"]


def test_gpus_relaunches_the_same_command_after_the_checks(tmp_path, monkeypatch):
    launched = []
    monkeypatch.setattr(distributed, "launch_torchrun", lambda n, argv: launched.append((n, argv)) or 7)
    monkeypatch.setattr(cli, "model_files", lambda args, name: (None,) * 5 + ("note",))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["generate", "--prompt", "a fox", "--gpus", "2", "--device", "cpu", "-o", str(tmp_path / "o.mp4")]
    assert main(argv) == 7  # the exit status of the processes
    assert launched == [(2, argv)]
    assert not (tmp_path / "o.mp4").exists()


def test_bad_request_fails_before_any_process_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(distributed, "launch_torchrun", lambda n, argv: pytest.fail("processes were started"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["generate", "--prompt", "a fox", "--gpus", "2", "--device", "cpu", "--height", "100",
            "-o", str(tmp_path / "o.mp4")]
    assert main(argv) == 2
    assert "height and width must be positive multiples" in capsys.readouterr().err


def test_cuda_graphs_with_several_gpus(tmp_path, monkeypatch, capsys):
    """Offered with --memory full (the processes are started with the flag passed on); refused
    without it, before any process starts."""
    launched = []
    monkeypatch.setattr(distributed, "launch_torchrun", lambda n, argv: launched.append((n, argv)) or 0)
    monkeypatch.setattr(cli, "device_and_dtype", lambda args, demo: (torch.device("cuda"), torch.bfloat16))
    monkeypatch.setattr(cli, "process_count", lambda gpus, launched, device: gpus)  # as if 2 GPUs were there
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["generate", "--prompt", "a fox", "--gpus", "2", "--cuda-graphs", "-o", str(tmp_path / "o.mp4")]
    assert main(argv) == 2
    assert "CUDA graphs need a CUDA device and memory 'full'" in capsys.readouterr().err
    assert not launched
    assert main(argv + ["--memory", "full"]) == 0
    assert launched == [(2, argv + ["--memory", "full"])]


def test_world_size_without_torchrun_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for name in ("checkpoint.safetensors", "upsampler.safetensors"):  # only their presence is checked first
        (tmp_path / name).touch()
    (tmp_path / "gemma").mkdir()
    with pytest.raises(InputError, match=r"world_size=2 needs 2 processes started by torchrun"):
        load_pipeline("distilled", tmp_path / "checkpoint.safetensors", tmp_path / "gemma",
                      tmp_path / "upsampler.safetensors", device="cpu", world_size=2)


def test_sequence_exchange_reaches_the_pipeline(tmp_path, monkeypatch):
    import fastltx.pipelines as pipelines
    seen = {}

    def stop(*args, **kwargs):
        seen.update(kwargs)
        raise InputError("stopped before loading")
    monkeypatch.setattr(pipelines, "load_pipeline", stop)
    monkeypatch.setattr(cli, "model_files", lambda args, name: (None,) * 5 + ("note",))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["generate", "--prompt", "a fox", "--device", "cpu", "--sequence-exchange", "keys", "-o", str(tmp_path / "o.mp4")]
    assert main(argv) == 2
    assert seen["sequence_exchange"] == "keys"
