"""The memory plan's decisions for given budgets: pure arithmetic on explicit byte figures.

Sizes are those of the 19B set, rounded to MiB so the expected forms can be checked by hand:
transformer 640 MiB outside its 48 blocks of 720 MiB (360 MiB with fp8 linears); text encoder
(Gemma 3 12B + the LTX-2 text projection) 3,400 MiB outside its 48 layers of 440 MiB.
"""

import pytest
import torch

from fastltx.runtime.memory import (GiB, MiB, Form, MemorySetting, ModelSize, OutOfMemory, Residency, StageNeed,
                                    budget_for, full_plan_check, gib, parse_memory, plan_memory, suggest,
                                    usable_memory)

SIZES = {
    "transformer": ModelSize(640 * MiB, 720 * MiB, 48, 360 * MiB),
    "text_encoder": ModelSize(3400 * MiB, 440 * MiB, 48),
    "upsampler": ModelSize(500 * MiB),
    "video_decoder": ModelSize(800 * MiB),
    "audio_decoder": ModelSize(100 * MiB),
    "vocoder": ModelSize(100 * MiB),
}
DISTILLED = [
    StageNeed("text", ("text_encoder",), 1600 * MiB),
    StageNeed("stage 1", ("transformer",), 1000 * MiB),
    StageNeed("upsample", ("transformer", "upsampler"), 0),
    StageNeed("stage 2", ("transformer",), 2200 * MiB),
    StageNeed("decode", ("video_decoder", "audio_decoder", "vocoder"), 3000 * MiB),
]
AUTO = MemorySetting("auto")


def plan(budget_mib, fp8=("transformer",)):
    return plan_memory(AUTO, budget_mib * MiB, SIZES, DISTILLED, fp8)


def test_parse_memory():
    assert parse_memory("auto") == MemorySetting("auto") and parse_memory("FULL").full
    assert parse_memory("24g") == MemorySetting("24g", 24 * GiB)
    assert parse_memory("16GiB").budget == 16 * GiB and parse_memory("1500m").budget == 1500 * MiB
    assert parse_memory(3 * GiB).budget == 3 * GiB
    for bad in ("lots", "0g", "-2g", "24", True, 0):
        with pytest.raises(ValueError, match="memory must be|must be positive"):
            parse_memory(bad)


def test_budget_keeps_a_margin_on_the_device_only():
    assert budget_for(MemorySetting("full"), 80 * GiB) is None
    assert budget_for(AUTO, None) is None  # off the GPU: no limit
    assert budget_for(MemorySetting("1m", MiB), None) == MiB  # off the GPU an explicit budget is exact
    # 24g on an 80 GiB card: 24 GiB less 4% and 256 MiB
    assert budget_for(MemorySetting("24g", 24 * GiB), 80 * GiB) == int(24 * GiB * 0.96) - 256 * MiB
    assert budget_for(AUTO, 20 * GiB) == int(20 * GiB * 0.96) - 256 * MiB  # capped by what the card has
    assert usable_memory("cpu") is None


def test_no_budget_keeps_everything_plain():
    p = plan_memory(MemorySetting("full"), None, SIZES, DISTILLED, ("transformer",))
    assert p.forms == {} and p.device_bytes("transformer") == (640 + 48 * 720) * MiB
    assert p.reserves["transformer"] == 2200 * MiB  # the largest activations of its stages


def test_large_card_keeps_everything_plain():
    p = plan(80_000)
    assert p.forms == {} and not p.shared  # all models (61,220 MiB) and the largest activations fit at once
    assert plan(23_000).shared  # on a 24 GiB card they take turns


def test_24g_transformer_in_fp8_text_encoder_streams():
    p = plan(23_000)
    # bf16 transformer: 35,200 + 2,200 > 23,000; fp8: 640 + 48 x 360 = 17,920, + 2,200 fits
    assert p.form("transformer") == Form(fp8=True)
    # text: 3,400 + (48 - s + 3 slots) x 440 + 1,600 <= 23,000  ->  s >= 10.1: 11 layers streamed
    assert p.form("text_encoder") == Form(streamed=11)
    assert p.device_bytes("text_encoder") == (3400 + 40 * 440) * MiB
    assert "37 of 48 layers resident, 11 streamed" in p.describe()
    # the text encoder cannot run beside the transformer: 1,600 + 17,920 + 3,400 + 2 slots x 440 > 23,000
    assert p.keep == () and "models take turns" in p.describe()


def test_transformer_stays_when_the_text_encoder_fits_beside_it():
    # 1,600 + 17,920 + E <= 24,000: E <= 4,480; all 48 layers streamed two ahead take 3,400 + 3 x
    # 440 = 4,720, one ahead 4,280: the transformer stays in its form, the text encoder streams
    p = plan(24_000)
    assert p.keep == ("transformer",) and p.shared
    assert p.form("transformer") == Form(fp8=True)
    assert p.form("text_encoder") == Form(streamed=48, ahead=1)
    assert "the transformer stays" in p.describe()


def test_anchor_streams_no_more_than_alone():
    """At 16 GiB the transformer streams 18 blocks alone; the text encoder (5,880 MiB at its most
    frugal, with 1,600 of activations) does not fit beside it: the models take turns."""
    p = plan(15_000)
    assert p.keep == () and p.form("transformer").streamed == 18


def test_24g_without_fp8_streams_bf16_blocks():
    p = plan(23_000, fp8=())  # e.g. a GPU without fp8 matmuls, or a stage-2 LoRA switched on bf16 weights
    # 640 + (48 - s + 3) x 720 + 2,200 <= 23,000  ->  s >= 23
    assert p.form("transformer") == Form(streamed=23)
    assert p.device_bytes("transformer") + 2200 * MiB == 23_000 * MiB  # exactly full


def test_16g_streams_fp8_blocks():
    p = plan(15_000)
    # 640 + (51 - s) x 360 + 2,200 <= 15,000  ->  s >= 17.2: 18 streamed, 30 resident
    assert p.form("transformer") == Form(fp8=True, streamed=18)
    # 3,400 + (51 - s) x 440 + 1,600 <= 15,000  ->  s >= 28.3: 29 streamed
    assert p.form("text_encoder") == Form(streamed=29)
    for need in DISTILLED:
        assert sum(p.device_bytes(m) for m in need.models) + need.activations <= 15_000 * MiB


def test_fp8_text_encoder_streams_beside_the_kept_transformer():
    """With fp8 weights for the text encoder too, 24 GiB keeps the fp8 transformer on the device for
    good and streams the text encoder beside it, instead of the two taking turns. Text encoder as
    the 19B set's, in MiB: 48 layers of 440 (220 in fp8); outside them the token embedding, 1,900,
    run from host memory when it streams (never fp8), and the projection and connectors, 2,700
    (1,350 in fp8)."""
    text = ModelSize(4600 * MiB, 440 * MiB, 48, 220 * MiB, host=1900 * MiB, fp8_other=3250 * MiB)
    sizes = dict(SIZES, text_encoder=text)
    p = plan_memory(AUTO, 23_000 * MiB, sizes, DISTILLED, ("transformer", "text_encoder"))
    assert p.keep == ("transformer",) and p.form("transformer") == Form(fp8=True)
    # beside 640 + 48 x 360 = 17,920: 1,350 + (51 - s) x 220 + 1,600 <= 23,000 - 17,920 -> s >= 41.6
    assert p.form("text_encoder") == Form(fp8=True, streamed=42)
    assert p.device_bytes("transformer") + p.device_bytes("text_encoder") + 1600 * MiB <= 23_000 * MiB
    # in bf16 it does not fit beside it (all streamed, one ahead: 2,700 + 2 x 440 + 1,600 > 5,080): the two
    # take turns, the text encoder with 2,700 + (51 - s) x 440 + 1,600 <= 23,000 -> s >= 8.5
    p = plan_memory(AUTO, 23_000 * MiB, sizes, DISTILLED, ("transformer",))
    assert p.keep == () and p.form("text_encoder") == Form(streamed=9)
    assert text.total(fp8=True) == (3250 + 48 * 220) * MiB and text.total() == (4600 + 48 * 440) * MiB


def test_upsample_stage_keeps_room_for_the_upsampler():
    sizes = dict(SIZES, upsampler=ModelSize(3000 * MiB))
    p = plan_memory(AUTO, 23_000 * MiB, sizes, DISTILLED, ("transformer",))
    # fp8 resident (17,920) + the upsampler (3,000) fits 23,000 too
    assert p.form("transformer") == Form(fp8=True)
    sizes = dict(SIZES, upsampler=ModelSize(6000 * MiB))
    p = plan_memory(AUTO, 23_000 * MiB, sizes, DISTILLED, ("transformer",))
    # a 6,000 MiB upsampler does not: 640 + (51 - s) x 360 + 6,000 <= 23,000  ->  s >= 5.6: 6
    # streamed, 16,840 (which leaves the text encoder 4,560: all its layers streamed one ahead fit
    # beside it, so the transformer stays)
    assert p.form("transformer") == Form(fp8=True, streamed=6) and p.keep == ("transformer",)
    assert p.device_bytes("transformer") + 6000 * MiB <= 23_000 * MiB


def test_too_small_names_the_stage_and_what_fits():
    with pytest.raises(OutOfMemory) as e:
        plan(4000)
    # the transformer fits with every block streamed (640 + 3 x 360 + 2,200 = 3,920), the text
    # encoder does not: 3,400 + 3 x 440 + 1,600 = 6,320 MiB
    assert e.value.stage == "text" and e.value.needed == 6320 * MiB
    msg = str(e.value)
    assert "not enough GPU memory for text: it needs about 6.2 GiB, 3.9 GiB is usable under --memory auto" in msg
    assert "--memory 8g would fit" in msg  # 8 GiB less the margin is 7,608 MiB


def test_full_that_cannot_fit_says_auto_would():
    p = plan_memory(MemorySetting("full"), None, SIZES, DISTILLED)
    with pytest.raises(OutOfMemory, match=r"stage 2|decode") as e:
        full_plan_check(p, DISTILLED, 60 * GiB)  # 61,220 MiB of weights + 3,000 of activations
    assert "--memory auto would fit" in str(e.value)
    full_plan_check(p, DISTILLED, 80 * GiB)  # fits: no error


def test_suggestions():
    auto = AUTO
    assert suggest(10 * GiB, 23 * GiB, auto) == "--memory 16g would fit"  # the largest tier the card holds
    assert suggest(10 * GiB, 23 * GiB, auto, smaller_than=15 * GiB) == "--memory 12g would fit"
    assert suggest(5 * GiB, None, auto) == "--memory 8g would fit"  # size unknown: the smallest tier
    assert suggest(3 * GiB, 6 * GiB, auto) == "--memory 4g would fit"
    assert "lower the resolution" in suggest(30 * GiB, 23 * GiB, auto)
    assert gib(1536 * MiB) == "1.5 GiB" and gib(3 * MiB) == "3.0 MiB"


def test_residency_sequential_by_stage():
    """24 GiB card, the distilled pipeline called twice: who leaves the device when."""
    p = plan(23_000)
    r = Residency(p.budget, p.reserves, p.keep)
    dev = p.device_bytes
    r.begin_stage()
    assert r.admit("text_encoder", dev("text_encoder")) == []
    r.begin_stage()
    assert r.admit("transformer", dev("transformer")) == ["text_encoder"]  # leaves before the transformer comes
    r.begin_stage()
    r.touch("transformer")
    assert r.admit("upsampler", dev("upsampler")) == []  # fits beside the fp8 transformer
    r.begin_stage()
    r.touch("transformer")
    r.begin_stage()  # decode: 17,920 + 500 + 800 + 3,000 of activations fit; the audio side too
    assert [r.admit(m, dev(m)) for m in ("video_decoder", "audio_decoder", "vocoder")] == [[], [], []]
    r.begin_stage()  # the next call's text stage (21,000 + 1,600 of activations): least recently used first
    assert r.admit("text_encoder", dev("text_encoder")) == ["upsampler", "transformer", "video_decoder"]
    assert list(r.loaded) == ["audio_decoder", "vocoder", "text_encoder"]


def test_residency_keeps_the_anchor():
    """24,000 MiB: the transformer stays (17,920), the text encoder streams beside it (4,280)."""
    p = plan(24_000)
    r = Residency(p.budget, p.reserves, p.keep)
    dev = p.device_bytes
    for stage in (["text_encoder"], ["transformer"], ["transformer", "upsampler"], ["transformer"],
                  ["video_decoder", "audio_decoder", "vocoder"]):  # a first call
        r.begin_stage()
        for m in stage:
            r.admit(m, dev(m))
    assert list(r.loaded) == ["upsampler", "transformer", "video_decoder", "audio_decoder", "vocoder"]
    r.begin_stage()  # next call's text stage: 17,920 + 1,500 + 4,280 + 1,600 = 25,300 > 24,000:
    # models of earlier stages leave, least recently used first, the kept transformer never
    assert r.admit("text_encoder", dev("text_encoder")) == ["upsampler", "video_decoder"]
    r.begin_stage()  # stage 1 (the transformer stays: its activations make room): 2,200 more
    assert r.admit("transformer", dev("transformer")) == ["audio_decoder", "vocoder", "text_encoder"]


def test_residency_never_evicts_a_model_of_the_current_stage():
    r = Residency(10 * MiB, {"a": 0, "b": 0})
    r.begin_stage()
    r.admit("a", 6 * MiB)
    assert r.admit("b", 6 * MiB) == []  # over budget, but "a" is in use in this stage
    r.begin_stage()
    r.touch("a")
    assert r.admit("c", 3 * MiB) == ["b"]  # "b" is of an earlier stage; "a" was used in this one


def test_no_budget_never_evicts():
    r = Residency(None)
    for m in ("a", "b", "c"):
        r.begin_stage()
        assert r.admit(m, 100 * GiB) == []
    assert r.held == 300 * GiB


def test_module_sizes_on_meta():
    from fastltx.checkpoint.factory import transformer_config
    from fastltx.layers.linear import to_fp8
    from fastltx.models.transformer import LTXTransformer, fp8_linear
    from fastltx.runtime.memory import layered_size, module_bytes
    with torch.device("meta"):
        model = LTXTransformer(transformer_config("v1", "tiny", num_layers=3))
    size = layered_size(model, model.transformer_blocks, torch.bfloat16, lambda layer: to_fp8(layer, fp8_linear))
    assert size.layers == 3 and size.total() == module_bytes(model, torch.bfloat16)
    with torch.device("meta"):
        converted = LTXTransformer(transformer_config("v1", "tiny", num_layers=3)).to(torch.bfloat16)
    converted.to_fp8()
    assert size.total(fp8=True) == module_bytes(converted)  # the fp8 estimate is what conversion gives


def test_concrete_device_names_the_current_gpu(monkeypatch):
    """"cuda" becomes "cuda:N" (what tensors there report; the plan compares the two), N the current
    device; an indexed or CPU device stays as it is."""
    from fastltx.runtime.memory import concrete_device
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert concrete_device("cuda") == torch.device("cuda", 3)
    assert concrete_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert concrete_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("ranks", [2, 3, 4, 6])
@pytest.mark.parametrize("height, width", [(768, 1280), (1024, 1536)])
def test_split_rank_needs_less_than_the_planned_whole_sequence(ranks, height, width):
    """On several GPUs each rank's plan is the whole sequence's forward. By the same estimates, what
    a rank holds in stage 2 stays under it: its shard's forward, plus every token's keys and values
    for both stages and ``push_usable``'s probe buffer (kept "push" buffers on 2 GPUs; on 3 or 6 the
    "keys" gather, as large but transient). Arithmetic on the estimates, not a measurement: it fails
    if the exchange's buffers or the activation count change enough. (19B, the distilled 121 frames.)"""
    from fastltx.checkpoint.factory import transformer_config
    from fastltx.conditioning.latents import VideoGrid, audio_latent_frames
    from fastltx.models.transformer.memory import exchange_bytes, forward_bytes
    from fastltx.runtime.push import PROBE_BYTES
    cfg = transformer_config("v1", "19b")
    audio = audio_latent_frames(121, 24.0)
    full = VideoGrid.for_pixels(121, height, width, 24.0).tokens
    half = VideoGrid.for_pixels(121, height // 2, width // 2, 24.0).tokens
    planned = forward_bytes(cfg, full, audio, 1024, 1)
    shard = forward_bytes(cfg, -(-full // ranks), audio, 1024, 1)
    kept = exchange_bytes(cfg, full, ranks, 1) + exchange_bytes(cfg, half, ranks, 1) + ranks * PROBE_BYTES
    assert exchange_bytes(cfg, full, ranks, 1) == 2 * full * 4096 * 2  # (divisible: no padding)
    assert shard + kept < planned, (gib(shard), gib(kept), gib(planned))
