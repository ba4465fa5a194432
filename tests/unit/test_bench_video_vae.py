"""The CPU-importable parts of bench/video_vae.py: arguments, cases, the reference on our weights."""

import torch

from bench.video_vae import agreement, cases, parse_args, random_decoder, random_latent, reference_decoder_on_weights
from fastltx.models.video_vae import decode_video
from tests.parity.reference import require_reference


def test_arguments_and_cases():
    args = parse_args([])
    assert args.sizes == [(512, 768), (1024, 1536)] and args.frames == 121 and args.budget_gib == 4.0
    assert [c.name for c in cases(args.sizes)] == ["512x768, untiled", "512x768, default tiling",
                                                   "1024x1536, untiled", "1024x1536, default tiling"]
    assert random_latent(512, 768, 121, "cpu").shape == (1, 128, 16, 16, 24)


def test_reference_shares_our_weights_and_agrees():
    require_reference()
    from ltx_core.model.video_vae import decode_video as ref_decode_video
    ours = random_decoder("v1", "tiny", dtype=torch.float32)
    ref = reference_decoder_on_weights("v1", "tiny", ours)
    assert ref.conv_in.conv.weight.data_ptr() == ours.conv_in.conv.weight.data_ptr()
    latent = random_latent(64, 96, 17, "cpu", torch.float32)
    with torch.no_grad():
        a = torch.cat(list(decode_video(ours, latent, torch.Generator().manual_seed(0), tiling=None)))
        b = torch.cat(list(ref_decode_video(latent, ref, None, torch.Generator().manual_seed(0))))
    assert agreement(a, b) == "max 0, 0.00% differ"
    assert agreement(a, b[:1]).startswith("shape")


def test_dry_run_on_cpu(capsys):
    """The whole script, tiny and on the CPU, with a budget that makes "auto" stream: every row agrees
    with the reference decode it reproduces."""
    require_reference()
    from bench.video_vae import main
    from fastltx.models.video_vae.layouts import vae_config
    from fastltx.models.video_vae.memory import estimate_decode_bytes
    cfg, shape = vae_config("v1", "tiny").decoder, (1, 128, 3, 2, 3)
    budget = (estimate_decode_bytes(cfg, shape, torch.bfloat16, 1) + estimate_decode_bytes(cfg, shape, torch.bfloat16))
    budget = f"{budget / 2 / 2**30:.6f}"
    rows = main(["--device", "cpu", "--size", "tiny", "--sizes", "64x96", "--frames", "17", "--reps", "1",
                 "--warmup", "0", "--budget-gib", budget])
    out = capsys.readouterr().out
    auto = f"fastltx auto, {float(budget):g} GiB"
    assert [r[1] for r in rows] == ["ltx-core", "fastltx one pass (channels-last)", "fastltx one pass (plain)",
                                    "ltx-core", "fastltx tiled (channels-last)", "fastltx tiled (plain)",
                                    f"{auto} (channels-last)", f"{auto} (plain)",
                                    "fastltx streamed, 2 frames (channels-last)"]
    checks = [r[4] for r in rows if r[1] != "ltx-core"]
    # bf16: streaming and channels-last round a few values differently, by at most one level here
    assert all(c.startswith("max 0,") or c.startswith("max 1,") for c in checks), checks
    assert "plan Streaming(chunk_frames=1)" in out and "card: cpu (dry run)" in out
