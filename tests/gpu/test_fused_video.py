"""The fused video kernels (``fastltx.layers.fused_video``) against the eager path they replace, on the GPU.

float32 with TF32 off: the fused convolution input (PixelNorm, modulation, SiLU, padding) differs
from the eager operations only by float32 rounding (bound 1e-5 relative L2, also streamed); the
depth-to-space rearrangement is exact in bf16.
"""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
BOUND = 1e-5


@pytest.fixture(autouse=True)
def _no_tf32():
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def _pair(channels_in, channels_out, mode):
    from fastltx.layers.conv import CausalConv3d, to_channels_last
    torch.manual_seed(0)
    eager = CausalConv3d(channels_in, channels_out, 3, spatial_padding_mode=mode).cuda()
    fused = CausalConv3d(channels_in, channels_out, 3, spatial_padding_mode=mode).cuda()
    fused.load_state_dict(eager.state_dict())
    return eager, to_channels_last(fused)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("modulated", [None, False, True])
def test_conv_with_activation_matches_eager(mode, causal, modulated):
    from fastltx.layers import fused_video
    from fastltx.layers.norm_act import NormAct
    assert fused_video.available()
    eager, fused = _pair(24, 40, mode)
    x = torch.randn(2, 24, 5, 6, 7, device="cuda")
    act = None
    if modulated is not None:
        act = NormAct(torch.randn(2, 24, 1, 1, 1, device="cuda") * 0.3,
                      torch.randn(2, 24, 1, 1, 1, device="cuda") * 0.3) if modulated else NormAct()
    with torch.inference_mode():
        assert fused_video.conv_usable(x, fused.conv) and not fused_video.conv_usable(x, eager.conv)
        expected = eager(x, causal, act=act)
        for inp in (x, x.contiguous(memory_format=torch.channels_last_3d)):
            got = fused(inp, causal, act=act)
            assert got.shape == expected.shape
            assert rel_l2(got, expected) <= BOUND


@pytest.mark.parametrize("chunk", [1, 2])
def test_streamed_fused_conv_matches_one_pass(chunk):
    from fastltx.layers.norm_act import NormAct
    from fastltx.layers.streaming import TemporalStream
    eager, fused = _pair(16, 16, "reflect")
    x = torch.randn(1, 16, 7, 5, 6, device="cuda")
    with torch.inference_mode():
        expected = eager(x, False, act=NormAct())
        stream, pieces = TemporalStream(), []
        for start in range(0, 7, chunk):
            pieces.append(fused(x[:, :, start:start + chunk], False, stream, act=NormAct()))
        stream.ending = {fused}
        pieces.append(fused(x[:, :, :0], False, stream, act=NormAct()))
        got = torch.cat(pieces, dim=2)
    assert got.shape == expected.shape
    assert rel_l2(got, expected) <= BOUND


@pytest.mark.parametrize("stride,multiplier", [((2, 2, 2), 2), ((1, 2, 2), 1), ((2, 1, 1), 2)])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("deferred_bias", [False, True])
def test_depth_to_space_upsample(stride, multiplier, residual, deferred_bias):
    """The same convolution output on both sides; the rearrangement (and residual) is exact in bf16, and
    adding the deferred bias in the kernel rounds once instead of twice (float32 here)."""
    from fastltx.layers.conv import to_channels_last
    from fastltx.models.video_vae.blocks import DepthToSpaceUpsample
    torch.manual_seed(0)
    dtype = torch.float32 if deferred_bias else torch.bfloat16
    eager = DepthToSpaceUpsample(32, stride, "reflect", multiplier, residual).cuda().to(dtype)
    fused = DepthToSpaceUpsample(32, stride, "reflect", multiplier, residual).cuda().to(dtype)
    fused.load_state_dict(eager.state_dict())
    to_channels_last(fused)
    x = torch.randn(1, 32, 4, 5, 6, device="cuda", dtype=dtype)
    with torch.inference_mode():
        y, bias = eager.conv.forward_unbiased(x, False)
        assert bias is None
        y_cl = y.contiguous(memory_format=torch.channels_last_3d)
        eager.conv.forward_unbiased = lambda *a, **k: (y.clone(), None)
        if deferred_bias:
            b = eager.conv.conv.bias
            y_cl = (y - b.view(1, -1, 1, 1, 1)).contiguous(memory_format=torch.channels_last_3d)
            fused.conv.forward_unbiased = lambda *a, **k: (y_cl, b)
        else:
            fused.conv.forward_unbiased = lambda *a, **k: (y_cl, None)
        expected, got = eager(x, False), fused(x, False)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    if deferred_bias:
        assert rel_l2(got, expected) <= 1e-6
    else:
        assert torch.equal(got, expected)


def test_bias_residual_add():
    from fastltx.layers.fused_video import add_bias_residual_
    h = torch.randn(2, 48, 3, 5, 7, device="cuda").contiguous(memory_format=torch.channels_last_3d)
    skip, bias = torch.randn(2, 48, 3, 5, 7, device="cuda"), torch.randn(48, device="cuda")
    expected = h + bias.view(1, -1, 1, 1, 1) + skip
    got = add_bias_residual_(h, bias, skip)
    assert got is h and rel_l2(got, expected) <= 1e-6
