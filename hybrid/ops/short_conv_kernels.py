"""Triton kernels of the causal depthwise short convolution + SiLU (+ per-head L2 norm of q and k).

The input is the projected ``[q | k | v]`` row of every token (``TT`` tokens, row stride ``sx``; channel
``c`` has taps ``w[c, 0..W-1]``, the last one on the current token). One program covers ``BT`` tokens of
one head: programs ``0..H-1`` the q heads (``K`` channels each), ``H..2H-1`` the k heads, ``2H..3H-1``
the v heads (``V`` channels). A head's channels are contiguous, so the L2 norm of a q or k head is an
epilogue of its own program. Tokens before a sequence's start read its carried state ``s0 [N, C, W-1]``
(oldest first) or zero. Sequences: ``VARLEN`` reads each token's sequence from ``doc`` and ``cu``, else
token ``t`` belongs to sequence ``t // T``.

The backward recomputes everything from the input: ``dpre`` (the gradient before the SiLU) at a token
needs that token's convolution and, for q and k, its head's norm; ``dx[t] = sum_i w[i] dpre[t + W-1-i]``
inside the sequence, so every program recomputes ``dpre`` on its tokens shifted by ``0..W-1``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _seq_of(rows, TT, T, cu_ptr, doc_ptr, VARLEN: tl.constexpr):
    """Sequence index, start and end of every token in ``rows``."""
    if VARLEN:
        doc = tl.load(doc_ptr + rows, mask=rows < TT, other=0).to(tl.int64)
        start = tl.load(cu_ptr + doc).to(tl.int64)
        end = tl.load(cu_ptr + doc + 1).to(tl.int64)
    else:
        doc = rows // T
        start = doc * T
        end = start + T
    return doc, start, end


@triton.jit
def _head(pc, H, K: tl.constexpr, V: tl.constexpr):
    """(first input channel, channel count, is-a-value-head) of channel program ``pc``."""
    is_v = pc >= 2 * H
    col0 = tl.where(is_v, 2 * H * K + (pc - 2 * H) * V, pc * K)
    width = tl.where(is_v, V, K)
    return col0, width, is_v


@triton.jit
def _tap(x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, i, sx, C, W: tl.constexpr, HAS_STATE: tl.constexpr):
    """Input of tap ``i`` for the tokens ``rows``: x[rows - (W-1) + i] inside the sequence, else state."""
    src = rows - (W - 1) + i
    inside = src >= start
    m = ok[:, None] & cmask[None, :]
    xv = tl.load(x_ptr + src[:, None] * sx + cols[None, :], mask=m & inside[:, None], other=0.0).to(tl.float32)
    if HAS_STATE:
        slot = src - start + (W - 1)
        sv = tl.load(s0_ptr + doc[:, None] * (C * (W - 1)) + cols[None, :] * (W - 1) + slot[:, None],
                     mask=m & (~inside)[:, None], other=0.0).to(tl.float32)
        xv += sv
    return xv


@triton.jit
def _conv(x_ptr, s0_ptr, w_ptr, rows, ok, start, doc, cols, cmask, sx, C, W: tl.constexpr,
          HAS_STATE: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    acc = tl.zeros((BT, BD), dtype=tl.float32)
    for i in tl.static_range(W):
        wi = tl.load(w_ptr + cols * W + i, mask=cmask, other=0.0).to(tl.float32)
        acc += _tap(x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, i, sx, C, W, HAS_STATE) * wi[None, :]
    return acc


@triton.jit
def _dpre(x_ptr, s0_ptr, w_ptr, gbase, gstride, rows, ok, start, doc, cols, cmask, d, sx, C, eps, is_v,
          W: tl.constexpr, HAS_STATE: tl.constexpr, NORM: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    """Gradient before the SiLU at the tokens ``rows`` (zero where not ``ok``), from the output gradient."""
    pre = _conv(x_ptr, s0_ptr, w_ptr, rows, ok, start, doc, cols, cmask, sx, C, W, HAS_STATE, BT, BD)
    sig = tl.sigmoid(pre)
    y = pre * sig
    m = ok[:, None] & cmask[None, :]
    dy = tl.load(gbase + rows[:, None] * gstride + d[None, :], mask=m, other=0.0).to(tl.float32)
    if NORM:
        nrm = tl.sqrt(tl.sum(y * y, 1))
        den = tl.maximum(nrm, eps)
        yh = y / den[:, None]
        proj = tl.where(nrm > eps, tl.sum(dy * yh, 1), 0.0)
        dn = (dy - yh * proj[:, None]) / den[:, None]
        dy = tl.where(is_v, dy, dn)
    return tl.where(m, dy * sig * (1.0 + pre * (1.0 - sig)), 0.0)


@triton.jit
def short_conv_fwd_kernel(x_ptr, w_ptr, s0_ptr, q_ptr, k_ptr, v_ptr, cu_ptr, doc_ptr, TT, T, sx, C, H, eps,
                          K: tl.constexpr, V: tl.constexpr, W: tl.constexpr, VARLEN: tl.constexpr,
                          HAS_STATE: tl.constexpr, NORM: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr):
    pt = tl.program_id(0)
    pc = tl.program_id(1)
    rows = pt * BT + tl.arange(0, BT).to(tl.int64)
    ok = rows < TT
    doc, start, end = _seq_of(rows, TT, T, cu_ptr, doc_ptr, VARLEN)
    col0, width, is_v = _head(pc, H, K, V)
    d = tl.arange(0, BD)
    cmask = d < width
    cols = col0 + d
    y = _conv(x_ptr, s0_ptr, w_ptr, rows, ok, start, doc, cols, cmask, sx, C, W, HAS_STATE, BT, BD)
    y = y * tl.sigmoid(y)
    if NORM:
        den = tl.maximum(tl.sqrt(tl.sum(y * y, 1)), eps)
        y = tl.where(is_v, y, y / den[:, None])
    if pc < H:
        obase = q_ptr + pc * K
        ostride = H * K
    elif pc < 2 * H:
        obase = k_ptr + (pc - H) * K
        ostride = H * K
    else:
        obase = v_ptr + (pc - 2 * H) * V
        ostride = H * V
    tl.store(obase + rows[:, None] * ostride + d[None, :], y.to(obase.dtype.element_ty),
             mask=ok[:, None] & cmask[None, :])


@triton.jit
def short_conv_bwd_kernel(x_ptr, w_ptr, s0_ptr, dq_ptr, dk_ptr, dv_ptr, dx_ptr, dwp_ptr, cu_ptr, doc_ptr,
                          TT, T, sx, C, H, eps, K: tl.constexpr, V: tl.constexpr, W: tl.constexpr,
                          VARLEN: tl.constexpr, HAS_STATE: tl.constexpr, NORM: tl.constexpr, BT: tl.constexpr,
                          BD: tl.constexpr):
    """dx [TT, C] (contiguous) and this program's partial weight gradient dwp[pt, C, W] (fp32)."""
    pt = tl.program_id(0)
    pc = tl.program_id(1)
    rows = pt * BT + tl.arange(0, BT).to(tl.int64)
    ok = rows < TT
    doc, start, end = _seq_of(rows, TT, T, cu_ptr, doc_ptr, VARLEN)
    col0, width, is_v = _head(pc, H, K, V)
    d = tl.arange(0, BD)
    cmask = d < width
    cols = col0 + d
    if pc < H:
        gbase = dq_ptr + pc * K
        gstride = H * K
    elif pc < 2 * H:
        gbase = dk_ptr + (pc - H) * K
        gstride = H * K
    else:
        gbase = dv_ptr + (pc - 2 * H) * V
        gstride = H * V
    dp0 = _dpre(x_ptr, s0_ptr, w_ptr, gbase, gstride, rows, ok, start, doc, cols, cmask, d, sx, C, eps, is_v,
                W, HAS_STATE, NORM, BT, BD)
    # weight gradient of this block: sum over its tokens of dpre * tap input
    for i in tl.static_range(W):
        xi = _tap(x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, i, sx, C, W, HAS_STATE)
        tl.store(dwp_ptr + pt * (C * W) + cols * W + i, tl.sum(dp0 * xi, 0), mask=cmask)
    # input gradient: token t feeds tap i of token t + W-1-i (same sequence only)
    w_last = tl.load(w_ptr + cols * W + (W - 1), mask=cmask, other=0.0).to(tl.float32)
    dx = dp0 * w_last[None, :]
    for s in tl.static_range(1, W):
        tgt = rows + s
        ok_s = ok & (tgt < end)
        dps = _dpre(x_ptr, s0_ptr, w_ptr, gbase, gstride, tgt, ok_s, start, doc, cols, cmask, d, sx, C, eps,
                    is_v, W, HAS_STATE, NORM, BT, BD)
        wi = tl.load(w_ptr + cols * W + (W - 1 - s), mask=cmask, other=0.0).to(tl.float32)
        dx += dps * wi[None, :]
    tl.store(dx_ptr + rows[:, None] * C + cols[None, :], dx.to(dx_ptr.dtype.element_ty),
             mask=ok[:, None] & cmask[None, :])


@triton.jit
def short_conv_dstate_kernel(x_ptr, w_ptr, s0_ptr, dq_ptr, dk_ptr, dv_ptr, ds0_ptr, cu_ptr, TT, T, sx, C, H, eps,
                             K: tl.constexpr, V: tl.constexpr, W: tl.constexpr, VARLEN: tl.constexpr,
                             NORM: tl.constexpr, BS: tl.constexpr, BD: tl.constexpr):
    """Gradient of the carried state ``s0 [N, C, W-1]``: slot j (position start - (W-1) + j) feeds tap i of
    token start + j - i, for i <= j."""
    n = tl.program_id(0).to(tl.int64)
    pc = tl.program_id(1)
    j = tl.arange(0, BS).to(tl.int64)
    if VARLEN:
        start = tl.load(cu_ptr + n).to(tl.int64)
        end = tl.load(cu_ptr + n + 1).to(tl.int64)
    else:
        start = n * T
        end = start + T
    startv = tl.zeros((BS,), dtype=tl.int64) + start
    docv = tl.zeros((BS,), dtype=tl.int64) + n
    col0, width, is_v = _head(pc, H, K, V)
    d = tl.arange(0, BD)
    cmask = d < width
    cols = col0 + d
    if pc < H:
        gbase = dq_ptr + pc * K
        gstride = H * K
    elif pc < 2 * H:
        gbase = dk_ptr + (pc - H) * K
        gstride = H * K
    else:
        gbase = dv_ptr + (pc - 2 * H) * V
        gstride = H * V
    acc = tl.zeros((BS, BD), dtype=tl.float32)
    for i in tl.static_range(W - 1):
        tgt = startv + j - i
        ok = (j < W - 1) & (j >= i) & (tgt < end)
        dp = _dpre(x_ptr, s0_ptr, w_ptr, gbase, gstride, tgt, ok, startv, docv, cols, cmask, d, sx, C, eps, is_v,
                   W, True, NORM, BS, BD)
        wi = tl.load(w_ptr + cols * W + i, mask=cmask, other=0.0).to(tl.float32)
        acc += dp * wi[None, :]
    tl.store(ds0_ptr + n * (C * (W - 1)) + cols[None, :] * (W - 1) + j[:, None], acc,
             mask=(j < W - 1)[:, None] & cmask[None, :])


@triton.jit
def short_conv_step_kernel(x_ptr, w_ptr, s_ptr, q_ptr, k_ptr, v_ptr, sx, C, H, eps, K: tl.constexpr,
                           V: tl.constexpr, W: tl.constexpr, NORM: tl.constexpr, BD: tl.constexpr):
    """One token per sequence: output from the state ``s [N, C, W-1]`` and the token, then the state shifts
    by one in place (oldest dropped, the token appended)."""
    n = tl.program_id(0).to(tl.int64)
    pc = tl.program_id(1)
    col0, width, is_v = _head(pc, H, K, V)
    d = tl.arange(0, BD)
    cmask = d < width
    cols = col0 + d
    xt = tl.load(x_ptr + n * sx + cols, mask=cmask, other=0.0)
    acc = xt.to(tl.float32) * tl.load(w_ptr + cols * W + (W - 1), mask=cmask, other=0.0).to(tl.float32)
    sbase = s_ptr + n * (C * (W - 1)) + cols * (W - 1)
    for j in tl.static_range(W - 1):
        sj = tl.load(sbase + j, mask=cmask, other=0.0).to(tl.float32)
        acc += sj * tl.load(w_ptr + cols * W + j, mask=cmask, other=0.0).to(tl.float32)
        if j > 0:
            tl.store(sbase + (j - 1), sj.to(s_ptr.dtype.element_ty), mask=cmask)
    if W > 1:
        tl.store(sbase + (W - 2), xt.to(s_ptr.dtype.element_ty), mask=cmask)
    y = acc * tl.sigmoid(acc)
    if NORM:
        den = tl.maximum(tl.sqrt(tl.sum(y * y, 0)), eps)
        y = tl.where(is_v, y, y / den)
    if pc < H:
        obase = q_ptr + n * (H * K) + pc * K
    elif pc < 2 * H:
        obase = k_ptr + n * (H * K) + (pc - H) * K
    else:
        obase = v_ptr + n * (H * V) + (pc - 2 * H) * V
    tl.store(obase + d, y.to(obase.dtype.element_ty), mask=cmask)
