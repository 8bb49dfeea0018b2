"""Triton kernels of the causal depthwise short convolution + SiLU (+ per-head L2 norm of q and k).

The input is the projected ``[q | k | v]`` row of every token (``TT`` tokens, row stride ``sx``; channel
``c`` has taps ``w[c, 0..W-1]``, the last one on the current token). One program covers ``BT`` tokens of
one head: programs ``0..H-1`` the q heads (``K`` channels each), ``H..2H-1`` the k heads, ``2H..3H-1``
the v heads (``V`` channels). A head's channels are contiguous, so the L2 norm of a q or k head is an
epilogue of its own program. Tokens before a sequence's start read its carried state ``s0 [N, C, W-1]``
(oldest first) or zero. Sequences: ``VARLEN`` reads each token's sequence from ``doc`` and ``cu``, else
token ``t`` belongs to sequence ``t // T``.

The backward recomputes the convolution, SiLU and norms from the input in a first pass that writes
``dpre`` (the gradient before the SiLU, in the input's dtype) and per-program weight-gradient sums; a
second pass forms ``dx[t] = sum_i w[i] dpre[t + W-1-i]`` inside each sequence. (Recomputing ``dpre`` at
the W shifted tokens in one pass instead needed about 255 registers per thread for sm_90.)
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
def _tap_grad(acc, dp, x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, i, sx, C, W: tl.constexpr,
              HAS_STATE: tl.constexpr):
    """acc + dpre * (input of tap i), or acc unchanged when the convolution has no tap i."""
    if i < W:
        acc += dp * _tap(x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, i, sx, C, W, HAS_STATE)
    return acc


@triton.jit
def _store_tap_grad(dwp_ptr, acc, pt, cols, cmask, i, C, W: tl.constexpr):
    if i < W:
        tl.store(dwp_ptr + pt * (C * W) + cols * W + i, tl.sum(acc, 0), mask=cmask)


@triton.jit
def short_conv_dpre_kernel(x_ptr, w_ptr, s0_ptr, dq_ptr, dk_ptr, dv_ptr, dp_ptr, dwp_ptr, cu_ptr, doc_ptr, TT, T, sx,
                           C, H, eps, K: tl.constexpr, V: tl.constexpr, W: tl.constexpr, VARLEN: tl.constexpr,
                           HAS_STATE: tl.constexpr, NORM: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr,
                           NBLK: tl.constexpr, TAP0: tl.constexpr, STORE_DP: tl.constexpr):
    """Backward, first pass over NBLK blocks of BT tokens: the gradient before the SiLU, dpre [TT, C]
    (contiguous, written when STORE_DP), and this program's partial weight gradient of taps TAP0..TAP0+3,
    dwp[pt, C, W] (fp32). One [BT, BD] accumulator per tap, summed over rows once at the end (a row sum
    per block and tap cost twice the whole pass on the H200). Wider convolutions take W/4 launches."""
    pt = tl.program_id(0)
    pc = tl.program_id(1)
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
    a0 = tl.zeros((BT, BD), dtype=tl.float32)
    a1 = tl.zeros((BT, BD), dtype=tl.float32)
    a2 = tl.zeros((BT, BD), dtype=tl.float32)
    a3 = tl.zeros((BT, BD), dtype=tl.float32)
    for blk in range(NBLK):
        rows = (pt * NBLK + blk) * BT + tl.arange(0, BT).to(tl.int64)
        ok = rows < TT
        doc, start, end = _seq_of(rows, TT, T, cu_ptr, doc_ptr, VARLEN)
        dp = _dpre(x_ptr, s0_ptr, w_ptr, gbase, gstride, rows, ok, start, doc, cols, cmask, d, sx, C, eps, is_v,
                   W, HAS_STATE, NORM, BT, BD)
        if STORE_DP:
            tl.store(dp_ptr + rows[:, None] * C + cols[None, :], dp.to(dp_ptr.dtype.element_ty),
                     mask=ok[:, None] & cmask[None, :])
        a0 = _tap_grad(a0, dp, x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, TAP0, sx, C, W, HAS_STATE)
        a1 = _tap_grad(a1, dp, x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, TAP0 + 1, sx, C, W, HAS_STATE)
        a2 = _tap_grad(a2, dp, x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, TAP0 + 2, sx, C, W, HAS_STATE)
        a3 = _tap_grad(a3, dp, x_ptr, s0_ptr, rows, ok, start, doc, cols, cmask, TAP0 + 3, sx, C, W, HAS_STATE)
    _store_tap_grad(dwp_ptr, a0, pt, cols, cmask, TAP0, C, W)
    _store_tap_grad(dwp_ptr, a1, pt, cols, cmask, TAP0 + 1, C, W)
    _store_tap_grad(dwp_ptr, a2, pt, cols, cmask, TAP0 + 2, C, W)
    _store_tap_grad(dwp_ptr, a3, pt, cols, cmask, TAP0 + 3, C, W)


@triton.jit
def short_conv_dx_kernel(dp_ptr, w_ptr, dx_ptr, cu_ptr, doc_ptr, TT, T, C, W: tl.constexpr, VARLEN: tl.constexpr,
                         BT: tl.constexpr, BC: tl.constexpr):
    """Backward, second pass: dx[t] = sum_s w[W-1-s] dpre[t + s] over the tokens of t's sequence."""
    pt = tl.program_id(0)
    pc = tl.program_id(1)
    rows = pt * BT + tl.arange(0, BT).to(tl.int64)
    ok = rows < TT
    doc, start, end = _seq_of(rows, TT, T, cu_ptr, doc_ptr, VARLEN)
    cols = pc * BC + tl.arange(0, BC)
    cmask = cols < C
    acc = tl.zeros((BT, BC), dtype=tl.float32)
    for s in tl.static_range(W):
        tgt = rows + s
        m = (ok & (tgt < end))[:, None] & cmask[None, :]
        dp = tl.load(dp_ptr + tgt[:, None] * C + cols[None, :], mask=m, other=0.0).to(tl.float32)
        acc += dp * tl.load(w_ptr + cols * W + (W - 1 - s), mask=cmask, other=0.0).to(tl.float32)[None, :]
    tl.store(dx_ptr + rows[:, None] * C + cols[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=ok[:, None] & cmask[None, :])


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
