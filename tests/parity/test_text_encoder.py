"""Text-path parity against ltx-core 1.0.0: the factory's tiny Gemma 3 directory and checkpoint, read
by each side's own loader (the reference's builder and key operations, see text_reference.py).

The reference encodes one prompt at a time (batch 1); we encode all prompts as one batch, so every
comparison is also a batch-versus-single check. Error measure: max |ours - ref| / max |ref| per
prompt. Bounds: float32 1e-5; bf16 4e-3, one bf16 rounding step (2^-8) of the largest value.
Measured on CPU: 0 everywhere (tokens, hidden states, features, both connectors; V1 and V2;
float32 and bf16): we follow the reference's operation order and dtype flow.

The sequence is 96 tokens instead of 1024 (the reference takes the length as an argument): a
multiple of the 16 tiny registers, longer than the 64-token slices of our feature normalisation,
and shorter than the longest prompt.
"""

import dataclasses

import pytest
import torch

from fastltx.checkpoint.factory import make_checkpoint
from fastltx.models.text_encoder import connector as connector_module
from fastltx.models.text_encoder import TextEncoder, load_gemma, load_text_processor
from fastltx.models.text_encoder.tiny import write_gemma
from tests.helpers import max_rel_error
from tests.parity.reference import require_reference
from tests.parity.text_reference import reference_gemma, reference_processor

pytestmark = pytest.mark.parity
BOUND = {torch.float32: 1e-5, torch.bfloat16: 4e-3}
MAX_LENGTH = 96
PROMPTS = [
    "",  # the BOS token only
    "  a cat, sleeping.  ",  # stripped before tokenisation
    "x",
    "Hello World.",  # upper case is unknown to the tiny vocabulary: <unk> tokens
    "y" * (MAX_LENGTH - 1),  # exactly the maximum with BOS: no padding
    "the quick brown fox jumps over the lazy dog, " * 4,  # longer than the maximum: truncated
]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture(scope="module", autouse=True)
def _reference():
    require_reference()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    parts = ("transformer", "text_projection", "text_connectors")
    return {"gemma": write_gemma(root / "gemma", "tiny", seed=3),
            "v1": make_checkpoint(root / "v1.safetensors", "v1", seed=4, parts=parts),
            "v2": make_checkpoint(root / "v2.safetensors", "v2", seed=5, parts=parts)}


@pytest.fixture(scope="module")
def gemmas(files):
    """(ours, reference, our batched hidden states and mask, reference per-prompt (hidden states, mask))."""
    cache = {}

    def get(dtype):
        if dtype not in cache:
            ours = load_gemma(files["gemma"], dtype=dtype, max_length=MAX_LENGTH)
            ref = reference_gemma(files["gemma"], dtype, MAX_LENGTH)
            with torch.no_grad():
                ids, mask = ours.tokenize(PROMPTS)
                cache[dtype] = ours, ref, ours(ids, mask), mask, [ref.encode(p) for p in PROMPTS]
        return cache[dtype]
    return get


@pytest.fixture(scope="module")
def processors(files, gemmas):
    cache = {}

    def get(version, dtype):
        if (version, dtype) not in cache:
            geometry = gemmas(dtype)[0].geometry
            cache[version, dtype] = (load_text_processor(files[version], geometry, dtype=dtype),
                                     reference_processor(files[version], geometry, dtype))
        return cache[version, dtype]
    return get


def errors(ours: torch.Tensor, refs: list[torch.Tensor]) -> list[float]:
    assert ours.shape[0] == len(refs)
    out = []
    for o, r in zip(ours, refs):
        assert o.dtype == r.dtype and o[None].shape == r.shape and torch.isfinite(o).all()
        out.append(max_rel_error(o[None], r))
    return out


def test_tokens_match_reference(gemmas):
    ours, ref, _, mask, _ = gemmas(torch.float32)
    ids, _ = ours.tokenize(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        pairs = ref.tokenizer.tokenize_with_weights(prompt)["gemma"]
        assert ids[i].tolist() == [int(t) for t, _ in pairs]
        assert mask[i].tolist() == [int(w) for _, w in pairs]
    lengths = mask.sum(dim=1).tolist()
    assert lengths[0] == 1 and lengths[2] == 2 and lengths[4] == lengths[5] == MAX_LENGTH
    assert ids[0, -1] == 2 and (ids[0, :-1] == 0).all()  # left padding with <pad>; the empty prompt is BOS
    first = ids.gather(1, (MAX_LENGTH - mask.sum(dim=1, keepdim=True)))
    assert (first == 2).all() and not (ids == 1).any()  # BOS in front of every prompt, no EOS


@pytest.mark.parametrize("dtype", DTYPES)
def test_hidden_states(gemmas, dtype):
    _, _, hidden, _, refs = gemmas(dtype)
    assert hidden.shape == (len(PROMPTS), MAX_LENGTH, 32, 4)  # tiny Gemma: hidden 32, 3 layers + embedding
    errs = errors(hidden, [torch.stack(states, dim=-1) for states, _ in refs])
    assert max(errs) <= BOUND[dtype], errs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_features(gemmas, processors, version, dtype):
    _, _, hidden, mask, refs = gemmas(dtype)
    ours, ref = processors(version, dtype)
    assert ours.cfg.version == version.upper()
    with torch.no_grad():
        video, audio = ours.features(hidden, mask)
        ref_out = [ref.feature_extractor(states, m, "left") for states, m in refs]
    errs = errors(video, [r[0] for r in ref_out]) + errors(audio, [r[1] for r in ref_out])
    assert max(errs) <= BOUND[dtype], errs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_connectors(gemmas, processors, version, dtype):
    _, _, hidden, mask, refs = gemmas(dtype)
    ours, ref = processors(version, dtype)
    with torch.no_grad():
        out = ours(hidden, mask)
        ref_out = [ref.process_hidden_states(states, m) for states, m in refs]
    assert out.video.shape == (len(PROMPTS), MAX_LENGTH, ours.cfg.video.dim)
    errs = errors(out.video, [r.video_encoding for r in ref_out])
    errs += errors(out.audio, [r.audio_encoding for r in ref_out])
    assert max(errs) <= BOUND[dtype], errs


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_batch_equals_single_prompts(gemmas, processors, version):
    """A guided step's positive and negative prompts in one batch give each prompt's own contexts."""
    encoder = TextEncoder(gemmas(torch.float32)[0], processors(version, torch.float32)[0])
    batch = encoder.encode(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        single = encoder.encode([prompt])
        assert max_rel_error(batch[i].video, single.video) <= BOUND[torch.float32]
        assert max_rel_error(batch[i].audio, single.audio) <= BOUND[torch.float32]
    pair = encoder.encode([PROMPTS[1], PROMPTS[3]])
    assert len(pair) == 2 and max_rel_error(pair[1].video, batch[3].video) <= BOUND[torch.float32]


def test_connectors_with_interleaved_rope_and_float32_grid(files, gemmas, tmp_path):
    """The reference's built-in defaults (interleaved RoPE, float32 frequency grid) read from the header."""
    from tests.unit.test_checkpoint_errors import rewrite

    def edit(cfg):
        cfg["transformer"]["rope_type"] = "interleaved"
        del cfg["transformer"]["frequencies_precision"]
    path = rewrite(files["v2"], tmp_path, edit_config=edit)
    _, _, hidden, mask, refs = gemmas(torch.float32)
    ours = load_text_processor(path, gemmas(torch.float32)[0].geometry, dtype=torch.float32)
    ref = reference_processor(path, ours.cfg.gemma, torch.float32)
    assert ours.cfg.rope_layout.value == "interleaved" and not ours.cfg.rope_float64
    with torch.no_grad():
        out = ours(hidden, mask)
        ref_out = [ref.process_hidden_states(states, m) for states, m in refs]
    errs = errors(out.video, [r.video_encoding for r in ref_out])
    errs += errors(out.audio, [r.audio_encoding for r in ref_out])
    assert max(errs) <= BOUND[torch.float32], errs


def _registers_in_place(x, valid, registers):
    """A porting error (and ltx-core's later behaviour): registers fill padded slots where they are."""
    t = x.shape[1]
    return torch.where(valid[:, :, None], x, registers.to(x.dtype).repeat(t // registers.shape[0], 1))


@pytest.mark.parametrize("error", ["registers in place", "default connector max position [1]"])
def test_parity_measure_catches_a_porting_error(gemmas, processors, monkeypatch, error):
    """Control: real porting errors land far outside the float32 bound on the same comparison."""
    _, _, hidden, mask, refs = gemmas(torch.float32)
    ours, ref = processors("v1", torch.float32)
    if error == "registers in place":
        monkeypatch.setattr(connector_module, "compact_with_registers", _registers_in_place)
    else:
        for c in (ours.video_connector, ours.audio_connector):
            monkeypatch.setattr(c, "cfg", dataclasses.replace(c.cfg, max_pos=(1.0,)))
    with torch.no_grad():
        out = ours(hidden, mask)
        ref_out = [ref.process_hidden_states(states, m) for states, m in refs]
    errs = errors(out.video, [r.video_encoding for r in ref_out])
    assert max(errs) > 100 * BOUND[torch.float32], errs
