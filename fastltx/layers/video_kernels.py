"""Triton kernels of ``fastltx.layers.fused_video`` (imported only when Triton is installed).

Activations are addressed as rows (one per batch, frame, height, width position) of C channels: with
channels-last tensors every row is contiguous. Row indices are int32 (rows < 2^31 / C), byte
offsets int64. Sizes that change with every chunk and tile are not specialised on (no recompiles);
strides and channel counts are (alignment and vector width of the channel loads).
"""

import triton
import triton.language as tl


@triton.jit
def split_rows(r, F, H, W):
    """Row index (int32) of a (B, F, H, W) grid -> b, f, h, w (int64, ready for byte offsets)."""
    w = r % W
    t = r // W
    h = t % H
    t = t // H
    return (t // F).to(tl.int64), (t % F).to(tl.int64), h.to(tl.int64), w.to(tl.int64)


@triton.jit(do_not_specialize=["rows", "F", "H", "W", "HO", "WO", "frame0"])
def norm_act_pad_kernel(x_ptr, out_ptr, scale_ptr, shift_ptr, bias_ptr, rows, C, F, H, W, HO, WO,
                        sxb, sxc, sxf, sxh, sxw, sob, soc, sof, soh, sow,
                        frame0, pad, s_stride, eps,
                        MODE: tl.constexpr, BIAS: tl.constexpr, NORM: tl.constexpr, MOD: tl.constexpr,
                        ACT: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = r < rows
    b, f, ho, wo = split_rows(r, F, HO, WO)
    hi = ho - pad
    wi = wo - pad
    inside = row_ok
    if MODE == 1:  # reflect (edge excluded)
        hi = tl.where(hi < 0, -hi, hi)
        hi = tl.where(hi >= H, 2 * (H - 1) - hi, hi)
        wi = tl.where(wi < 0, -wi, wi)
        wi = tl.where(wi >= W, 2 * (W - 1) - wi, wi)
    elif MODE == 2:  # replicate
        hi = tl.minimum(tl.maximum(hi, 0), H - 1)
        wi = tl.minimum(tl.maximum(wi, 0), W - 1)
    else:  # zeros
        inside = inside & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        hi = tl.minimum(tl.maximum(hi, 0), H - 1)
        wi = tl.minimum(tl.maximum(wi, 0), W - 1)
    c = tl.arange(0, BLOCK_C)
    c64 = c.to(tl.int64)  # channel strides are large for channels-first inputs
    c_ok = c < C
    load_ok = inside[:, None] & c_ok[None, :]
    src = b * sxb + f * sxf + hi * sxh + wi * sxw
    v = tl.load(x_ptr + src[:, None] + c64[None, :] * sxc, mask=load_ok, other=0.0).to(tl.float32)
    if BIAS:
        v += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        v = tl.where(load_ok, v, 0.0)
    if NORM:
        mean_sq = tl.sum(v * v, axis=1) / C
        v = v / tl.sqrt(mean_sq + eps)[:, None]
    if MOD:
        mod = b[:, None] * s_stride + c[None, :]
        scale = tl.load(scale_ptr + mod, mask=load_ok, other=0.0)
        shift = tl.load(shift_ptr + mod, mask=load_ok, other=0.0)
        v = v * (1.0 + scale) + shift
    if ACT:
        v = v * tl.sigmoid(v)
    v = tl.where(load_ok, v, 0.0)
    dst = b * sob + (f + frame0) * sof + ho * soh + wo * sow
    tl.store(out_ptr + dst[:, None] + c[None, :] * soc, v.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None] & c_ok[None, :])


@triton.jit(do_not_specialize=["rows", "T", "HO", "WO", "drop"])
def depth_to_space_kernel(y_ptr, x_ptr, bias_ptr, out_ptr, rows, C, CY, CX, T, HO, WO, drop,
                          syb, syc, syd, syh, syw, sxb, sxc, sxd, sxh, sxw, sob, soc, sot, soh, sow,
                          P1: tl.constexpr, P2: tl.constexpr, P3: tl.constexpr, RESIDUAL: tl.constexpr,
                          BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = r < rows
    b, to, ho, wo = split_rows(r, T, HO, WO)
    tf = to + drop
    d = tf // P1
    hh = ho // P2
    ww = wo // P3
    sub = ((tf % P1) * P2 + ho % P2) * P3 + wo % P3
    c = tl.arange(0, BLOCK_C)
    ok = row_ok[:, None] & (c < C)[None, :]
    volume = P1 * P2 * P3
    ch_y = ((c % CY)[None, :] * volume + sub[:, None]).to(tl.int64)
    v = tl.load(y_ptr + (b * syb + d * syd + hh * syh + ww * syw)[:, None] + ch_y * syc, mask=ok,
                other=0.0).to(tl.float32)
    if BIAS:
        v += tl.load(bias_ptr + ch_y, mask=ok, other=0.0).to(tl.float32)
    if RESIDUAL:
        ch_x = ((c % CX)[None, :] * volume + sub[:, None]).to(tl.int64)
        v += tl.load(x_ptr + (b * sxb + d * sxd + hh * sxh + ww * sxw)[:, None] + ch_x * sxc, mask=ok,
                     other=0.0).to(tl.float32)
    dst = b * sob + to * sot + ho * soh + wo * sow
    tl.store(out_ptr + dst[:, None] + c[None, :] * soc, v.to(out_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["rows", "F", "H", "W"])
def add_bias_residual_kernel(h_ptr, x_ptr, bias_ptr, rows, C, F, H, W,
                             shb, shc, shf, shh, shw, sxb, sxc, sxf, sxh, sxw,
                             ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    b, f, hh, ww = split_rows(r, F, H, W)
    c = tl.arange(0, BLOCK_C)
    c64 = c.to(tl.int64)
    c_ok = c < C
    ok = (r < rows)[:, None] & c_ok[None, :]
    h_at = h_ptr + (b * shb + f * shf + hh * shh + ww * shw)[:, None] + c64[None, :] * shc
    v = tl.load(h_at, mask=ok, other=0.0).to(tl.float32)
    v += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    v += tl.load(x_ptr + (b * sxb + f * sxf + hh * sxh + ww * sxw)[:, None] + c64[None, :] * sxc, mask=ok,
                 other=0.0).to(tl.float32)
    tl.store(h_at, v.to(h_ptr.dtype.element_ty), mask=ok)
