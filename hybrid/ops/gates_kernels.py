"""Triton kernels of the layer's gates: the log-decay ``g = -exp(A_log[h]) * softplus(f + dt_bias)`` per key
channel and the write gate ``w = sigmoid(logits)``. One program covers ``BT`` tokens of one head: its
``K`` decay channels and its ``WD`` write-gate channels (1 for a scalar gate, V for a vector one).
The backward recomputes both from the saved low-precision inputs and writes per-program partial sums of
the ``dt_bias`` and ``A_log`` gradients (added by the caller)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _softplus(z):
    # the threshold of torch's softplus: z itself above 20
    return tl.where(z > 20.0, z, tl.log(1.0 + tl.exp(tl.minimum(z, 20.0))))


@triton.jit
def gates_fwd_kernel(f_ptr, dt_ptr, alog_ptr, wl_ptr, g_ptr, w_ptr, TT, sf, sw, H, K: tl.constexpr,
                     WD: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BW: tl.constexpr):
    pt = tl.program_id(0)
    h = tl.program_id(1)
    rows = pt * BT + tl.arange(0, BT).to(tl.int64)
    ok = rows < TT
    ck = tl.arange(0, BK)
    km = ck < K
    m = ok[:, None] & km[None, :]
    z = tl.load(f_ptr + rows[:, None] * sf + h * K + ck[None, :], mask=m, other=0.0).to(tl.float32)
    z += tl.load(dt_ptr + h * K + ck, mask=km, other=0.0).to(tl.float32)[None, :]
    a = tl.exp(tl.load(alog_ptr + h).to(tl.float32))
    tl.store(g_ptr + rows[:, None] * (H * K) + h * K + ck[None, :], (-a * _softplus(z)).to(g_ptr.dtype.element_ty),
             mask=m)
    cw = tl.arange(0, BW)
    wm = ok[:, None] & (cw < WD)[None, :]
    lw = tl.load(wl_ptr + rows[:, None] * sw + h * WD + cw[None, :], mask=wm, other=0.0).to(tl.float32)
    tl.store(w_ptr + rows[:, None] * (H * WD) + h * WD + cw[None, :], tl.sigmoid(lw).to(w_ptr.dtype.element_ty),
             mask=wm)


@triton.jit
def gates_bwd_kernel(f_ptr, dt_ptr, alog_ptr, wl_ptr, dg_ptr, dw_ptr, df_ptr, dwl_ptr, ddt_ptr, da_ptr, TT, sf,
                     sw, H, HAS_DG: tl.constexpr, HAS_DW: tl.constexpr, K: tl.constexpr, WD: tl.constexpr,
                     BT: tl.constexpr, BK: tl.constexpr, BW: tl.constexpr):
    """df [TT, H*K], dwl [TT, H*WD] (contiguous); partials ddt [nb, H*K] and da [nb, H] (fp32)."""
    pt = tl.program_id(0)
    h = tl.program_id(1)
    rows = pt * BT + tl.arange(0, BT).to(tl.int64)
    ok = rows < TT
    ck = tl.arange(0, BK)
    km = ck < K
    m = ok[:, None] & km[None, :]
    if HAS_DG:
        z = tl.load(f_ptr + rows[:, None] * sf + h * K + ck[None, :], mask=m, other=0.0).to(tl.float32)
        z += tl.load(dt_ptr + h * K + ck, mask=km, other=0.0).to(tl.float32)[None, :]
        a = tl.exp(tl.load(alog_ptr + h).to(tl.float32))
        dg = tl.load(dg_ptr + rows[:, None] * (H * K) + h * K + ck[None, :], mask=m, other=0.0).to(tl.float32)
        dz = tl.where(m, -a * dg * tl.sigmoid(z), 0.0)
        tl.store(df_ptr + rows[:, None] * (H * K) + h * K + ck[None, :], dz.to(df_ptr.dtype.element_ty), mask=m)
        tl.store(ddt_ptr + pt * (H * K) + h * K + ck, tl.sum(dz, 0), mask=km)
        tl.store(da_ptr + pt * H + h, tl.sum(tl.sum(tl.where(m, -a * dg * _softplus(z), 0.0), 1), 0))
    if HAS_DW:
        cw = tl.arange(0, BW)
        wm = ok[:, None] & (cw < WD)[None, :]
        lw = tl.load(wl_ptr + rows[:, None] * sw + h * WD + cw[None, :], mask=wm, other=0.0).to(tl.float32)
        s = tl.sigmoid(lw)
        dw = tl.load(dw_ptr + rows[:, None] * (H * WD) + h * WD + cw[None, :], mask=wm, other=0.0).to(tl.float32)
        tl.store(dwl_ptr + rows[:, None] * (H * WD) + h * WD + cw[None, :], (dw * s * (1.0 - s)).to(
            dwl_ptr.dtype.element_ty), mask=wm)
