"""The CPU-checkable parts of bench/pipeline.py: models on shared tensors, the stand-in ledger, the
stage clock and the output comparison (the whole script's dry run takes minutes on a CPU:
``python bench/pipeline.py --size tiny --device cpu --height 64 --width 128 --frames 9``)."""

import pytest
import torch

from tests.parity.reference import require_reference


def test_arguments():
    from bench.pipeline import parse_args
    args = parse_args([])
    assert (args.size, args.height, args.width, args.frames, args.guided_steps) == ("19b", 512, 768, 121, 5)


def test_reference_models_share_our_tensors(tmp_path):
    require_reference()
    pytest.importorskip("ltx_pipelines")
    from bench.pipeline import PrebuiltLedger, build
    from fastltx.models.text_encoder.tiny import write_tokenizer

    ours, ref = build("tiny", torch.device("cpu"), write_tokenizer(tmp_path / "tokenizer"))
    assert set(ref) == {"transformer", "text_encoder", "gemma_embeddings_processor", "video_encoder",
                        "video_decoder", "audio_decoder", "vocoder", "spatial_upsampler"}
    pairs = [(ours["_transformer"], ref["transformer"].velocity_model), (ours["video_encoder"], ref["video_encoder"]),
             (ours["video_decoder"], ref["video_decoder"]), (ours["audio_decoder"], ref["audio_decoder"]),
             (ours["vocoder"], ref["vocoder"]), (ours["upsampler"], ref["spatial_upsampler"]),
             (ours["text_encoder"].processor, ref["gemma_embeddings_processor"])]
    for mine, theirs in pairs:
        mine_ptrs = {t.data_ptr() for t in mine.state_dict().values()}
        theirs_ptrs = {t.data_ptr() for t in theirs.state_dict().values()}
        assert mine_ptrs == theirs_ptrs, type(mine).__name__
    gemma = {t.data_ptr() for t in ours["text_encoder"].gemma.language_model.parameters()}
    assert gemma <= {t.data_ptr() for t in ref["text_encoder"].model.parameters()}
    # one set of latent statistics, as in a checkpoint
    stats = lambda m: dict(m.per_channel_statistics.named_buffers())  # noqa: E731
    assert all(torch.equal(t, stats(ours["video_encoder"])[k]) for k, t in stats(ours["video_decoder"]).items())
    ledger = PrebuiltLedger(ref)
    assert ledger.transformer() is ref["transformer"] and ledger.spatial_upsampler() is ref["spatial_upsampler"]
    with pytest.raises(AttributeError):
        ledger.audio_encoder()


def test_stage_clock_and_comparison():
    from bench.pipeline import StageClock, compare, summarize
    clock = StageClock(torch.device("cpu"))
    denoise = clock.timed(lambda x: x + 1)
    assert denoise(1) == 2 and denoise(2) == 3
    clock.timed(lambda: None, "text")()
    assert set(clock.times) == {"stage 1", "stage 2", "text"}
    frames = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    audio = torch.ones(2, 10)
    runs = [(t, {"text": t / 2}, frames, audio, 0.0) for t in (3.0, 1.0, 2.0)]
    s = summarize(runs)
    assert s["total"] == 2.0 and s["stages"] == {"text": 1.0} and s["totals"] == [3.0, 1.0, 2.0]
    other = dict(s, frames=frames + 3, audio=audio * 1.5)
    c = compare(other, s)
    assert c["frames_max"] == 3 and c["frames_mean"] == 3 and c["audio_max"] == 0.5
    assert "error" in compare(dict(s, frames=frames[:1]), s)
