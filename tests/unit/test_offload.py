"""Weights in host memory: streamed and resident execution give identical results (float32, tiny
models; on the CPU "host" and "device" are both the CPU, but homes, slots, hooks and prefetch order
are the code that runs on a GPU), loading by memory map, and the pipelines under a memory budget:
models taking turns on the device, streamed layers, and clear out-of-memory errors."""

import pytest
import torch
from safetensors import safe_open

from fastltx.checkpoint.factory import make_checkpoint
from fastltx.checkpoint.mapped import MappedFile
from fastltx.checkpoint.safetensors_file import CheckpointError
from fastltx.layers.linear import Fp8Linear, to_fp8
from fastltx.models.transformer import fp8_linear, load_transformer, open_transformer
from fastltx.runtime.memory import Form, OutOfMemory, StageNeed
from fastltx.runtime.offload import Offloaded, load_layered, streamed_layers
from tests.parity.test_transformer import inputs

LAYERS = 5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "five.safetensors", "v1", seed=3, num_layers=LAYERS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from fastltx.pipelines.demo import demo_files
    return demo_files(tmp_path_factory.mktemp("models"))


def layered(path, streamed, ahead=2, fp8=False, offload=True):
    reader = open_transformer(path)
    off = Offloaded(reader.model, "cpu", reader.model.transformer_blocks, ahead) if offload else None
    convert = (lambda layer: to_fp8(layer, fp8_linear)) if fp8 else None  # noqa: E731
    model = load_layered(reader, "transformer_blocks", "cpu", torch.float32, convert, offload=off)
    if off is not None:
        off.admit(streamed)
    return model, off


def forward_twice(model, x):
    with torch.no_grad():
        return [model(*x) for _ in range(2)]  # the second forward starts from layers prefetched by the first


@pytest.fixture(scope="module")
def reference(checkpoint):
    plain = load_transformer(checkpoint, "cpu", torch.float32)
    x = inputs(plain, torch.float32, sigmas=(0.8, 0.3), clean_tokens=3)
    return x, forward_twice(plain, x)


@pytest.mark.parametrize("streamed,ahead", [(0, 2), (2, 2), (LAYERS, 1), (3, 0)])
def test_streamed_equals_resident(checkpoint, reference, streamed, ahead):
    x, want = reference
    model, off = layered(checkpoint, streamed, ahead)
    issued = []
    stream = off._stream
    if stream is not None:
        original = stream._issue
        stream._issue = lambda position: (issued.append(position), original(position))[1]
        assert len(stream.slots) == min(ahead + 1, streamed)
    got = forward_twice(model, x)
    for g, w in zip(got, want):
        assert torch.equal(g[0], w[0]) and torch.equal(g[1], w[1])
    moving = streamed_layers(LAYERS, streamed)
    if streamed:  # each streamed layer copied in once per forward, in order; the next forward's first
        # (ahead of them) during the last ones
        lead = min(ahead + 1, streamed) - 1
        assert issued == (list(range(streamed)) * 3)[:2 * streamed + lead]
        first = model.transformer_blocks[moving[0]].attn1.to_q.weight
        assert inside(first, off.groups[moving[0]].home)  # back at its home after use
    for i in set(range(LAYERS)) - set(moving):  # resident
        assert inside(model.transformer_blocks[i].attn1.to_q.weight, off.groups[i].device)


def test_streamed_layers_spread():
    assert streamed_layers(5, 2) == [1, 4] and streamed_layers(5, 5) == [0, 1, 2, 3, 4] and streamed_layers(5, 0) == []
    got = streamed_layers(48, 17)
    assert len(set(got)) == 17 and got[-1] == 47 and min(b - a for a, b in zip(got, got[1:])) >= 2


@pytest.mark.parametrize("fp8", [False, True])
def test_text_cache_of_a_streamed_model(checkpoint, reference, fp8):
    """Caching the text keys/values runs the blocks' attention modules outside the blocks' forward:
    streamed blocks must still be on their slots then (on a GPU their homes are host memory; fp8
    linears hold their weights as buffers, which the first GPU run missed)."""
    x, _ = reference
    plain, _ = layered(checkpoint, 0, fp8=fp8, offload=False)
    with torch.no_grad():
        want = plain.cache_text(*x)
    model, off = layered(checkpoint, 3, fp8=fp8)
    moving = streamed_layers(LAYERS, 3)
    where = []
    for i in moving:
        to_k = model.transformer_blocks[i].attn2.to_k
        to_k.register_forward_hook(lambda m, a, out, i=i: where.append(
            (i, any(inside(m.weight, slot) for slot in off._stream.slots), inside(m.weight, off.groups[i].home))))
    with torch.no_grad():
        got = model.cache_text(*x)
    assert where == [(i, True, False) for i in moving]
    for g, w in zip(got, want):
        for gv, wv in zip(g, w):
            assert (gv is None and wv is None) or all(torch.equal(a, b) for a, b in zip(gv, wv))
    with torch.no_grad():  # a forward after the cache: the layer left on its slot goes home first
        out, ref = model(*x, text_cache=got), plain(*x, text_cache=want)
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def inside(t, flat):
    return flat is not None and flat.data_ptr() <= t.data_ptr() < flat.data_ptr() + flat.numel()


def test_evict_and_admit_again(checkpoint, reference):
    x, (want, _) = reference
    model, off = layered(checkpoint, 2)
    off.evict()
    assert not off.admitted and all(g.device is None for g in off.groups.values())
    assert inside(model.proj_out.weight, off.groups["rest"].home)  # every tensor at its home
    # homes are slices of a few power-of-two chunks (the size PyTorch's pinned allocator would round to)
    used = sum(g.nbytes for g in off.groups.values())
    assert all(c.numel() & (c.numel() - 1) == 0 for c, _ in off.arena.chunks) and used <= off.host_bytes < 2 * used
    off.admit(4)
    # the resident groups are slices of one device block (one allocation per admission)
    storages = {g.device.untyped_storage().data_ptr() for g in off.groups.values() if g.device is not None}
    assert len(storages) == 1
    with torch.no_grad():
        got = model(*x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_fp8_streamed_equals_fp8_resident(checkpoint):
    resident, _ = layered(checkpoint, 0, fp8=True, offload=False)
    assert isinstance(resident.transformer_blocks[0].ff.net[2], Fp8Linear)
    streamed, _ = layered(checkpoint, 3, fp8=True)
    x = inputs(resident, torch.float32, sigmas=(0.7,))
    with torch.no_grad():
        want, got = resident(*x), streamed(*x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_homes_of_a_loaded_model(checkpoint):
    """A model loaded the plain way gets homes when it first has to leave (channels-last convs too)."""
    from fastltx.models.video_vae import load_video_decoder
    decoder = load_video_decoder(checkpoint, "cpu", torch.float32, channels_last=True)
    latent = torch.randn(1, decoder.cfg.latent_channels, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = lambda: torch.Generator().manual_seed(1)  # noqa: E731 - the decoder is timestep-conditioned
    with torch.no_grad():
        want = decoder(latent, None, noise())
        off = Offloaded(decoder, "cpu")
        off.home_all()
        off.evict()
        off.admit()
        got = decoder(latent, None, noise())
    assert torch.equal(got, want)


def test_homes_take_little_more_than_the_weights(checkpoint, monkeypatch):
    """Pinning host memory is slow (~2 GB/s): a model's homes take the power-of-two chunks its own
    bytes need, not eight times a group's size (an H100 run spent 4 s pinning such chunks for the
    small models of a 24 GiB plan, on their first move out)."""
    from fastltx.runtime import offload
    small = torch.nn.Sequential(torch.nn.Linear(100, 300), torch.nn.Linear(300, 7))
    off = Offloaded(small, "cpu")
    off.home_all()
    used = off.groups["rest"].nbytes
    assert off.host_bytes == 1 << (used - 1).bit_length()  # the one chunk the pinned allocator would give
    model, off = layered(checkpoint, 0)  # layer by layer, as loading makes them: 5 x 115 KiB + 286 KiB
    used = sum(g.nbytes for g in off.groups.values())
    assert off.arena.expected == used and off.host_bytes == 1 << (used - 1).bit_length()
    monkeypatch.setattr(offload, "CHUNK", 2**18)  # over several chunks: two layers a chunk, the rest (286 KiB) alone
    model, off = layered(checkpoint, 0)
    assert [c.numel() for c, _ in off.arena.chunks] == [2**18, 2**18, 2**18, 2**19]


def test_mapped_file_reads_without_copying(checkpoint):
    f = MappedFile(checkpoint)
    with safe_open(str(checkpoint), "pt") as ref:
        for name in list(ref.keys())[:20]:
            t = f.tensor(name)
            assert t.dtype == ref.get_tensor(name).dtype and torch.equal(t, ref.get_tensor(name))
        name = "model.diffusion_model.proj_out.weight"
        before = f.tensor(name).clone()
        f.release([name])  # pages dropped are read again from the file
        assert torch.equal(f.tensor(name), before)


def test_mapped_file_catches_truncation(checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) - 1000])
    f = MappedFile(bad)
    last = max(f.header.tensors, key=lambda n: f.header.tensors[n].offsets[1])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        f.tensor(last)


def test_text_encoder_streams_its_layers(files):
    from fastltx.models.text_encoder import load_text_encoder
    encoder = load_text_encoder(files.text_encoder, files.checkpoint, "cpu", torch.float32)
    want = encoder.encode(["a prompt", "another"])
    off = Offloaded(encoder, "cpu", encoder.gemma.layers, host=encoder.gemma.host_parts)
    off.home_all()
    off.admit(streamed=2)
    got = encoder.encode(["a prompt", "another"])
    assert torch.equal(got.video, want.video) and torch.equal(got.audio, want.audio)
    # the token embedding runs from its host home (not copied to the device with the rest)
    assert inside(encoder.gemma.language_model.embed_tokens.weight, off.groups["host"].home)
    assert off.groups["host"].device is None and off.groups["rest"].device is not None


def test_text_encoder_in_fp8(files):
    """The text encoder's budget form: every Gemma and processor linear with fp8 weights (weights
    only). Its contexts stay within a few percent of the float32 ones (tiny random model), and the
    streamed fp8 encoder gives exactly the resident fp8 one's."""
    from fastltx.layers.linear import Fp8WeightLinear
    from fastltx.models.text_encoder import load_text_encoder
    from fastltx.models.text_encoder.encoder import convert_to_fp8
    encoder = load_text_encoder(files.text_encoder, files.checkpoint, "cpu", torch.float32)
    prompts = ["a prompt", "another"]
    want = encoder.encode(prompts)
    linears = sum(isinstance(m, torch.nn.Linear) for m in encoder.modules())
    convert_to_fp8(encoder, "cpu")
    assert sum(isinstance(m, Fp8WeightLinear) for m in encoder.modules()) == linears and encoder._fastltx_fp8
    fp8 = encoder.encode(prompts)
    errors = [((g - w).norm() / w.norm()).item() for g, w in ((fp8.video, want.video), (fp8.audio, want.audio))]
    assert all(1e-4 < e < 5e-2 for e in errors), errors
    off = Offloaded(encoder, "cpu", encoder.gemma.layers, host=encoder.gemma.host_parts)
    off.home_all()
    off.admit(streamed=2)
    got = encoder.encode(prompts)
    assert torch.equal(got.video, fp8.video) and torch.equal(got.audio, fp8.audio)


# ------------------------------------------------------------------------------------------ pipelines
KW = dict(seed=1, height=64, width=128, num_frames=9, fps=24.0, tiling=None, progress=False)


@pytest.fixture
def weights_only(monkeypatch):
    """Plan the text encoder and the transformer on their weights alone: the tiny model's audio
    decoder outweighs both, which the 19B set's never does, so the planned stages leave it out."""
    from fastltx.pipelines.memory import ModelMemory
    real = ModelMemory.stage_needs

    def needs(self, *args):
        keep = ("text_encoder", "transformer")
        return [StageNeed(n.stage, tuple(m for m in n.models if m in keep), 0) for n in real(self, *args)
                if any(m in keep for m in n.models)]
    monkeypatch.setattr(ModelMemory, "stage_needs", needs)


def test_pipeline_under_a_budget(files, checkpoint, weights_only, monkeypatch):
    """Text encoder and transformer take turns; the transformer streams 4 of its 5 blocks; the
    result is the unbudgeted one, and stays so on the next call (models brought back from host)."""
    from fastltx.pipelines import load_pipeline
    from fastltx.pipelines.memory import ModelMemory
    full = load_pipeline("distilled", checkpoint, files.text_encoder, files.upsampler, device="cpu",
                         dtype=torch.float32, memory="full")
    want = full("a prompt", **KW)
    size = full.components.memory.plan.sizes["transformer"]
    text = full.components.memory.plan.sizes["text_encoder"]
    assert text.total() < size.layer * 2  # so that the budget below holds one of them at a time
    budget = size.other + 4 * size.layer  # 1 block resident + 3 slots: 4 of 5 blocks streamed
    seen = {}
    begin = ModelMemory.begin_stage

    def record(self, stage):
        seen.setdefault(stage, list(self.c.loaded))
        begin(self, stage)
    monkeypatch.setattr(ModelMemory, "begin_stage", record)
    low = load_pipeline("distilled", checkpoint, files.text_encoder, files.upsampler, device="cpu",
                        dtype=torch.float32, memory=budget)
    got = low("a prompt", **KW)
    # models taking turns get their host homes while loading (in the first call; none when they first leave)
    assert set(low.components.loaded) <= set(low.components.memory.offloaded)
    plan = low.components.memory.plan
    assert plan.form("transformer").streamed == 4 and plan.form("text_encoder").streamed == 0
    assert seen["text"] == [] and "text_encoder" not in seen["upsample"] and "transformer" in seen["upsample"]
    assert torch.equal(got.video, want.video) and torch.equal(got.audio, want.audio)
    seen.clear()
    again = low("a prompt", **KW)
    assert "transformer" not in seen["upsample"] or "text_encoder" not in seen["upsample"]
    assert torch.equal(again.video, want.video) and torch.equal(again.audio, want.audio)
    assert set(low.components.memory.offloaded) >= {"transformer", "text_encoder"}


@pytest.mark.parametrize("turns", [True, False])
def test_fp8_text_encoder_under_a_budget(files, checkpoint, monkeypatch, turns):
    """A budget whose text stage holds the text encoder only with fp8 weights: the plan picks that
    form, the encoder loads in it (converted layer by layer; homed in host memory when the models
    take turns, else simply on the device), and the pipeline's result stays near the unbudgeted one
    (fp8=True: the transformer is fp8 in both runs) and repeats exactly."""
    from fastltx.layers.linear import Fp8WeightLinear
    from fastltx.pipelines import load_pipeline
    from fastltx.pipelines.memory import ModelMemory
    kwargs = dict(device="cpu", dtype=torch.float32, fp8=True)
    full = load_pipeline("distilled", checkpoint, files.text_encoder, files.upsampler, memory="full", **kwargs)
    want = full("a prompt", **KW)
    text = full.components.memory.plan.sizes["text_encoder"]
    assert text.fp8_layer < text.layer and text.total(fp8=True) < text.total() - 1000
    budget = 4 * 2**20
    real = ModelMemory.stage_needs

    def needs(self, *args):  # the text stage's activations leave room for the fp8 form only
        return [StageNeed(n.stage, n.models, budget - text.total(fp8=True) - 1000 if n.stage == "text" else 0)
                for n in real(self, *args) if n.stage in (("text", "stage 1", "upsample", "stage 2") if turns else
                                                          ("text",))]
    monkeypatch.setattr(ModelMemory, "stage_needs", needs)
    low = load_pipeline("distilled", checkpoint, files.text_encoder, files.upsampler, memory=budget, **kwargs)
    got = low("a prompt", **KW)
    plan = low.components.memory.plan
    assert plan.form("text_encoder").fp8 and plan.form("text_encoder").streamed == 0 and plan.shared == turns
    encoder = low.components.__dict__["text_encoder"]
    assert encoder._fastltx_fp8 and any(isinstance(m, Fp8WeightLinear) for m in encoder.processor.modules())
    assert not any(isinstance(m, torch.nn.Linear) for m in [*encoder.processor.modules(), *encoder.gemma.layers.modules()])
    diff = (got.video.float() - want.video.float()).abs()
    assert 0 < diff.mean() < 8, diff.mean()  # fp8 text contexts: a nearby video (tiny random model)
    again = low("a prompt", **KW)
    assert torch.equal(again.video, got.video) and torch.equal(again.audio, got.audio)


def test_transformer_stays_while_the_fp8_text_encoder_streams_beside_it(files, checkpoint, monkeypatch):
    """The 24 GiB plan of the 19B set in miniature: the budget holds the transformer, the small models
    and, beside them, the text encoder only in fp8 with some layers streamed. The transformer is never
    moved out, across stages and calls; both calls give the same result."""
    from fastltx.pipelines import load_pipeline
    from fastltx.pipelines.memory import ModelMemory
    kwargs = dict(device="cpu", dtype=torch.float32, fp8=True)
    full = load_pipeline("distilled", checkpoint, files.text_encoder, files.upsampler, memory="full", **kwargs)
    full("a prompt", **KW)
    sizes = full.components.memory.plan.sizes
    transformer, text = sizes["transformer"], sizes["text_encoder"]
    small = sum(size.total() for name, size in sizes.items() if name not in ("transformer", "text_encoder"))
    budget = transformer.total(fp8=True) + text.total(fp8=True) + small
    real = ModelMemory.stage_needs
    # the steps' activations leave the transformer room for its fp8 form only; the text stage's leave the
    # text encoder beside it one byte less than its whole fp8 form
    acts = {"text": small + 1, "stage 1": small + text.total(fp8=True), "stage 2": small + text.total(fp8=True)}

    def needs(self, *args):
        return [StageNeed(n.stage, n.models, acts.get(n.stage, 0)) for n in real(self, *args)]
    monkeypatch.setattr(ModelMemory, "stage_needs", needs)
    moved = []
    evict = ModelMemory.evict

    def record(self, name):
        moved.append(name)
        evict(self, name)
    monkeypatch.setattr(ModelMemory, "evict", record)
    low = load_pipeline("distilled", checkpoint, files.text_encoder, files.upsampler, memory=budget, **kwargs)
    first = low("a prompt", **KW)
    plan = low.components.memory.plan
    assert plan.keep == ("transformer",) and plan.form("transformer") == Form(fp8=True)
    assert plan.form("text_encoder").fp8 and 0 < plan.form("text_encoder").streamed < text.layers
    second = low("a prompt", **KW)
    assert "transformer" not in moved and "text_encoder" in moved
    assert torch.equal(first.video, second.video) and torch.equal(first.audio, second.audio)


def test_a_handed_in_text_encoder_on_the_device_has_no_fp8_form(files):
    """Only a text encoder still in host memory can be converted (when it is homed); one handed in
    on the device keeps its form, so the plan must not count it in fp8."""
    from fastltx.models.text_encoder import load_text_encoder
    from fastltx.pipelines import Components, ModelFiles
    components = Components(ModelFiles(files.checkpoint), "cpu", torch.float32, fp8=True, memory="1g")
    components.__dict__["text_encoder"] = load_text_encoder(files.text_encoder, files.checkpoint, "cpu", torch.float32)
    size = components.memory.size("text_encoder")
    assert size.layers > 0 and size.fp8_layer is None and size.fp8_other is None


def test_budget_too_small_fails_before_loading(files):
    from fastltx.pipelines import load_pipeline
    pipe = load_pipeline("distilled", files.checkpoint, files.text_encoder, files.upsampler, device="cpu",
                         dtype=torch.float32, memory=1000)
    with pytest.raises(OutOfMemory) as e:
        pipe("a prompt", **KW)
    assert "not enough GPU memory for text" in str(e.value) and "--memory" in str(e.value)
    assert pipe.components.loaded == []


def test_out_of_memory_in_a_stage_is_named(files, monkeypatch):
    """A fake allocator failure in the upsampler: the error names the stage, the memory it needed
    and a setting to try, not a bare traceback."""
    from fastltx.models.upsampler.model import LatentUpsampler
    from fastltx.pipelines import load_pipeline

    def fail(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity")
    monkeypatch.setattr(LatentUpsampler, "forward", fail)
    pipe = load_pipeline("distilled", files.checkpoint, files.text_encoder, files.upsampler, device="cpu",
                         dtype=torch.float32, memory="8g")
    with pytest.raises(OutOfMemory) as e:
        pipe("a prompt", **KW)
    msg = str(e.value)
    assert msg.startswith("not enough GPU memory for upsample: it needs about 2.") and "under --memory 8g" in msg
    assert "--memory 1g would fit" in msg  # a smaller budget than the one that failed
    assert isinstance(e.value.__cause__, torch.OutOfMemoryError)


def test_out_of_memory_while_loading_is_named(files, monkeypatch):
    from fastltx.pipelines import load_pipeline
    from fastltx.pipelines.memory import ModelMemory

    def fail(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB.")
    monkeypatch.setattr(ModelMemory, "load_transformer", fail)
    pipe = load_pipeline("distilled", files.checkpoint, files.text_encoder, files.upsampler, device="cpu",
                         dtype=torch.float32, memory="full")
    with pytest.raises(OutOfMemory, match="not enough GPU memory for loading the transformer: it needs about") as e:
        pipe("a prompt", **KW)
    assert "--memory auto would fit" in str(e.value) and "transformer" not in pipe.components.loaded


def test_cli_reports_out_of_memory_in_one_line(tmp_path, monkeypatch, capsys):
    from fastltx.cli import main
    from fastltx.models.upsampler.model import LatentUpsampler

    def fail(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB.")
    monkeypatch.setattr(LatentUpsampler, "forward", fail)
    rc = main(["generate", "--prompt", "p", "--demo-dir", str(tmp_path), "--height", "64", "--width", "64",
               "--frames", "9", "--no-progress", "--memory", "full", "-o", str(tmp_path / "out.mp4")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("fastltx: error: not enough GPU memory for upsample") and "--memory auto" in err[0]


def test_loras_fused_layer_by_layer(checkpoint, tmp_path):
    """LoRAs fused while loading one block at a time give the weights of the whole-model fusion."""
    from fastltx.checkpoint.factory import make_lora
    from fastltx.checkpoint.lora import fuse_loras, read_lora
    from fastltx.pipelines.memory import _lora_subset
    lora = make_lora(tmp_path / "lora.safetensors", "v1", seed=2, num_layers=LAYERS)
    plain = load_transformer(checkpoint, "cpu", torch.float32, loras=[(lora, 0.7)])
    weights = [(read_lora(lora), 0.7)]
    reader = open_transformer(checkpoint)
    off = Offloaded(reader.model, "cpu", reader.model.transformer_blocks)
    model = load_layered(reader, "transformer_blocks", "cpu", torch.float32,
                         adjust=lambda state: fuse_loras(state, _lora_subset(weights, state)), offload=off)
    want = plain.state_dict()
    for key, t in model.state_dict().items():
        assert torch.equal(t, want[key]), key


def test_switched_lora_on_streamed_blocks(files, checkpoint, weights_only):
    """Two-stage HQ switches the distilled LoRA (0.25, then 0.5) in place: on streamed blocks it is
    written into their homes, prefetched copies are dropped, and a model leaving the device leaves
    without it; results equal the unbudgeted run's, on this call and the next."""
    from fastltx.pipelines import load_pipeline
    kw = dict(KW, steps=2)
    lora = files.stage2_loras[0][0]
    full = load_pipeline("two-stage-hq", checkpoint, files.text_encoder, files.upsampler, distilled_lora=lora,
                         device="cpu", dtype=torch.float32, memory="full")
    want = full("a prompt", **kw)
    size = full.components.memory.plan.sizes["transformer"]
    low = load_pipeline("two-stage-hq", checkpoint, files.text_encoder, files.upsampler, distilled_lora=lora,
                        device="cpu", dtype=torch.float32, memory=size.other + 4 * size.layer)
    for _ in range(2):
        got = low("a prompt", **kw)
        assert low.components.memory.plan.form("transformer").streamed == 4
        assert torch.equal(got.video, want.video) and torch.equal(got.audio, want.audio)
