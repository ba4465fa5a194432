"""Vocoder parity against ltx-core 1.0.0: LTX-2's HiFi-GAN (24 kHz) and LTX-2.3's BWE vocoder (48 kHz).

Error measure: max |ours - ref| / max |ref| over the waveform. float32 bound 1e-5 (measured: 0,
bit-identical on CPU); bf16 bound 4e-3, one bf16 rounding step of the largest value (measured: 0).
"""

import pytest
import torch
from torch import nn

from fastltx.checkpoint.factory import make_checkpoint
from fastltx.checkpoint.safetensors_file import read_header
from fastltx.checkpoint.tiny_audio import stft_bases
from fastltx.layers.mel import slaney_mel_filters
from fastltx.models.vocoder import Generator, VocoderWithBWE, load_vocoder
from fastltx.models.vocoder.antialias import kaiser_sinc_filter
from tests.helpers import max_rel_error
from tests.parity.audio_reference import reference_vocoder
from tests.parity.reference import require_reference

pytestmark = pytest.mark.parity
BOUND = {torch.float32: 1e-5, torch.bfloat16: 4e-3}
FRAMES = 41
RATE = {"v1": 24000, "v2": 48000}
SAMPLES = {"v1": FRAMES * 240, "v2": FRAMES * 480}


@pytest.fixture(scope="module", autouse=True)
def _reference():
    require_reference()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocoder")
    return {v: make_checkpoint(root / f"{v}.safetensors", v, seed=21, parts=("vocoder",)) for v in ("v1", "v2")}


@pytest.fixture(scope="module")
def models(checkpoints):
    cache = {}

    def get(version, dtype):
        if (version, dtype) not in cache:
            path = checkpoints[version]
            cache[version, dtype] = load_vocoder(path, dtype=dtype), reference_vocoder(path, dtype)
        return cache[version, dtype]
    return get


def mel(batch: int, dtype, frames: int = FRAMES, seed: int = 0) -> torch.Tensor:
    return (torch.randn(batch, 2, frames, 64, generator=torch.Generator().manual_seed(seed)) - 4).to(dtype)


def compare(ours, ref, x, dtype, version):
    with torch.no_grad():
        o, r = ours(x), ref(x)
    assert o.shape == r.shape == (x.shape[0], 2, x.shape[2] * SAMPLES[version] // FRAMES) and o.dtype == r.dtype
    assert torch.isfinite(o).all() and r.float().std() > 1e-3
    assert (r.abs() >= 1).float().mean() < 0.05  # the output is not mostly saturated: a real comparison
    err = max_rel_error(o, r)
    assert err <= BOUND[dtype], err
    return err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_vocoder(models, version, dtype):
    ours, ref = models(version, dtype)
    assert isinstance(ours, Generator if version == "v1" else VocoderWithBWE)
    assert ours.output_sampling_rate == ref.output_sampling_rate == RATE[version]
    compare(ours, ref, mel(2, dtype), dtype, version)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_short_input(models, version):
    ours, ref = models(version, torch.float32)
    compare(ours, ref, mel(1, torch.float32, frames=3, seed=3), torch.float32, version)


def test_stored_signal_constants_are_true_values(checkpoints, models):
    """The factory writes the real anti-aliasing filters and STFT/mel bases (bf16, as stored)."""
    ours, _ = models("v2", torch.float32)
    state = ours.state_dict()
    kaiser = kaiser_sinc_filter(0.25, 0.3, 12).bfloat16().float()
    assert torch.equal(state["vocoder.resblocks.0.acts1.0.upsample.filter"], kaiser)
    assert torch.equal(state["bwe_generator.act_post.downsample.lowpass.filter"], kaiser)
    assert torch.equal(state["mel_stft.mel_basis"], slaney_mel_filters(16000, 512, 64).bfloat16().float())
    assert torch.equal(state["mel_stft.stft_fn.forward_basis"], stft_bases(512, 80)[0].bfloat16().float())
    assert abs(kaiser.sum().item() - 1) < 1e-2 and "resampler.filter" not in state
    header = read_header(checkpoints["v2"]).tensors
    assert "vocoder.vocoder.conv_pre.weight" in header and "vocoder.bwe_generator.conv_post.weight" in header
    assert "vocoder.bwe_generator.conv_post.bias" not in header  # use_bias_at_final false


def test_parity_measure_catches_a_porting_error(checkpoints, models):
    """Controls: the final leaky ReLU at the resblocks' slope 0.1 (not PyTorch's 0.01), and the BWE
    mel with centred instead of causal padding, are both far outside the bound."""
    _, ref = models("v1", torch.float32)
    wrong = load_vocoder(checkpoints["v1"], dtype=torch.float32)
    wrong.act_post = nn.LeakyReLU(0.1)
    with pytest.raises(AssertionError):
        compare(wrong, ref, mel(2, torch.float32), torch.float32, "v1")
    _, ref = models("v2", torch.float32)
    wrong = load_vocoder(checkpoints["v2"], dtype=torch.float32)
    wrong.mel_stft.forward = _centred(wrong.mel_stft)
    with pytest.raises(AssertionError):
        compare(wrong, ref, mel(2, torch.float32), torch.float32, "v2")


def _centred(m):
    hop = 80

    def forward(y):
        y = torch.nn.functional.pad(y.unsqueeze(1), (m.n_fft // 2, m.n_fft // 2 - hop))
        spec = torch.nn.functional.conv1d(y, m.stft_fn.forward_basis, stride=hop)
        n = spec.shape[1] // 2
        mag = torch.sqrt(spec[:, :n] ** 2 + spec[:, n:] ** 2)
        return torch.log(torch.clamp(torch.matmul(m.mel_basis, mag), min=1e-5))
    return forward
