"""Triton kernels of CARVE, version 2 (see docs/kernels.md, section "v2").

Four launches per forward+backward, two of them fully parallel over (chunk, head):

  prep  (parallel, grid [chunks, H]): the in-chunk cumulative log-decay G (fp32, token-indexed) and
        P = decayed q k^T (lower with diagonal, [C, C] fp32 per chunk). Both are content-independent.
  fwd   (sequential, grid [N, H]): one program per (sequence, head) walks its chunks with the
        [BK, BV] fp32 state in registers. Per chunk: content term, gates, M (strictly lower),
        A = (I + M)^-1 (16x16 substitution + nilpotent block merge), U = A (z - (Gam e) S0),
        O = s((Gam q) S0 + P U), m, S_next = exp(G_C) S0 + (k exp(G_C - G))^T U. Chunk-start states,
        m_prev and A are saved for the backward.
  bwd   (sequential, grid [N, H], reverse): dS [BK, BV] and dm in registers. Per chunk: dU, dR = A^T dU,
        dv, dw, dM, dP (saved), dS0, the state parts of dq/dk/dG, the M part of de (needed at once:
        it feeds the content gradient of the previous chunk), da, dc.
  post  (parallel, grid [chunks, H]): the decayed-product gradients of P (dq, dk, dG) and the k part of
        M, then dg = reverse cumsum of dG inside each chunk; writes dq, dk, dg in the input dtype.

Decays: every exponent evaluated is G_r - G_s with r >= s (or G_r itself), so <= 0. Off-diagonal
16-row sub-blocks factor through the cumulative decay at the end of the earlier sub-block (two factors
each <= 1, one tensor-core product), diagonal sub-blocks use exact pairwise differences masked before
the exponential.

Rows of a chunk tile are positions on the sequence's chunk grid (a sequence starting at position p
inside a chunk has its first tile's leading p rows masked). Masked rows load as zeros; the trailing
masked rows of an incomplete last chunk get G = G_last (the decay of the last valid row), so that no
exponent of a difference is positive there either.

Precision: LOWP (16-bit inputs on a GPU) casts the operands of the big products to the input dtype
with fp32 accumulation; otherwise PREC ("ieee" / "tf32"). The triangular inverse uses PREC_INV.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _cast(x, ref, LOWP: tl.constexpr):
    if LOWP:
        return x.to(ref.dtype.element_ty)
    else:
        return x


@triton.jit
def _tile(x, tok, rmask, cols, cmask, row_stride):
    ptr = x + tok[:, None].to(tl.int64) * row_stride + cols[None, :]
    return tl.load(ptr, mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _chunk_rows(j, p, L, bos, C: tl.constexpr):
    i = tl.arange(0, C)
    t = j * C + i - p
    rmask = (t >= 0) & (t < L)
    return t, rmask, bos + t


@triton.jit
def _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K: tl.constexpr):
    """Cumulative log-decay tile [C, BK]; trailing masked rows get G_last. Returns (G, G_last)."""
    G = _tile(Gb + hh * K, tok, rmask, rk, km, H * K)
    gl = tl.min(G, axis=0)  # G <= 0, non-increasing, masked rows 0: the min is G at the last valid row
    G = tl.where((t >= L)[:, None], gl[None, :], G)
    return G, gl


@triton.jit
def _off_fwd(x, y, G, C: tl.constexpr, NB: tl.constexpr, PREC: tl.constexpr):
    """Block-strictly-lower part of D_rs = sum_i x_r,i y_s,i exp(G_r,i - G_s,i) (16-row sub-blocks)."""
    i = tl.arange(0, C)
    acc = tl.zeros((C, C), dtype=tl.float32)
    for beta in tl.static_range(NB - 1):
        last = beta * 16 + 15
        ref = tl.sum(tl.where((i == last)[:, None], G, 0.0), axis=0)
        later = (i > last)[:, None]
        inblk = ((i >= beta * 16) & (i <= last))[:, None]
        fl = tl.where(later, tl.exp(tl.where(later, G - ref[None, :], 0.0)), 0.0)
        fr = tl.where(inblk, tl.exp(tl.where(inblk, ref[None, :] - G, 0.0)), 0.0)
        acc += tl.dot(x * fl, tl.trans(y * fr), input_precision=PREC)
    return acc


@triton.jit
def _off_bwd(dD, x, y, G, C: tl.constexpr, NB: tl.constexpr, PREC: tl.constexpr, NEED_DX: tl.constexpr,
             NEED_DY: tl.constexpr):
    """Gradients of _off_fwd: dx_r = sum_s dD_rs y_s E_rs, dy_s = sum_r dD_rs x_r E_rs (off-diagonal blocks)."""
    i = tl.arange(0, C)
    dx = tl.zeros(x.shape, dtype=tl.float32)
    dy = tl.zeros(x.shape, dtype=tl.float32)
    for beta in tl.static_range(NB - 1):
        last = beta * 16 + 15
        ref = tl.sum(tl.where((i == last)[:, None], G, 0.0), axis=0)
        later = (i > last)[:, None]
        inblk = ((i >= beta * 16) & (i <= last))[:, None]
        fl = tl.where(later, tl.exp(tl.where(later, G - ref[None, :], 0.0)), 0.0)
        fr = tl.where(inblk, tl.exp(tl.where(inblk, ref[None, :] - G, 0.0)), 0.0)
        if NEED_DX:
            dx += fl * tl.dot(dD, y * fr, input_precision=PREC)
        if NEED_DY:
            dy += fr * tl.dot(tl.trans(dD), x * fl, input_precision=PREC)
    return dx, dy


@triton.jit
def _pair_fwd(x, y, G, C: tl.constexpr, NB: tl.constexpr, BK: tl.constexpr):
    """Diagonal 16x16 sub-blocks [NB, 16, 16] of D (lower, with diagonal), exact pairwise decays."""
    li = tl.arange(0, 16)
    G3 = tl.reshape(G, (NB, 16, BK))
    x3 = tl.reshape(x, (NB, 16, BK))
    y3 = tl.reshape(y, (NB, 16, BK))
    D = tl.zeros((NB, 16, 16), dtype=tl.float32)
    for jc in tl.static_range(16):
        sel = (li == jc)[None, :, None]
        Gs = tl.sum(tl.where(sel, G3, 0.0), axis=1)
        ys = tl.sum(tl.where(sel, y3, 0.0), axis=1)
        ok = (li >= jc)[None, :, None]
        E = tl.exp(tl.where(ok, G3 - Gs[:, None, :], float("-inf")))
        col = tl.sum(x3 * (ys[:, None, :] * E), axis=2)
        D += tl.where((li == jc)[None, None, :], col[:, :, None], 0.0)
    return D


@triton.jit
def _pair_bwd(dD3, x, y, G, C: tl.constexpr, NB: tl.constexpr, BK: tl.constexpr, NEED_DY: tl.constexpr):
    """Gradients of _pair_fwd for a masked [NB, 16, 16] dD3: returns dx, dy as [C, BK]."""
    li = tl.arange(0, 16)
    G3 = tl.reshape(G, (NB, 16, BK))
    x3 = tl.reshape(x, (NB, 16, BK))
    y3 = tl.reshape(y, (NB, 16, BK))
    dx3 = tl.zeros((NB, 16, BK), dtype=tl.float32)
    dy3 = tl.zeros((NB, 16, BK), dtype=tl.float32)
    for jc in tl.static_range(16):
        sel = (li == jc)[None, :, None]
        Gs = tl.sum(tl.where(sel, G3, 0.0), axis=1)
        ys = tl.sum(tl.where(sel, y3, 0.0), axis=1)
        ok = (li >= jc)[None, :, None]
        E = tl.exp(tl.where(ok, G3 - Gs[:, None, :], float("-inf")))
        dcol = tl.sum(tl.where((li == jc)[None, None, :], dD3, 0.0), axis=2)  # [NB, 16]: dD[r, jc]
        dE = dcol[:, :, None] * E
        dx3 += dE * ys[:, None, :]
        if NEED_DY:
            dy3 += tl.where(sel, tl.sum(dE * x3, axis=1)[:, None, :], 0.0)
    return tl.reshape(dx3, (C, BK)), tl.reshape(dy3, (C, BK))


@triton.jit
def _diag_blocks(x, NB: tl.constexpr):
    """[C, C] -> its [NB, 16, 16] diagonal blocks."""
    ib = tl.arange(0, NB)
    eye = (ib[:, None] == ib[None, :]).to(tl.float32)
    x4 = tl.reshape(x, (NB, 16, NB, 16))
    return tl.sum(x4 * eye[:, None, :, None], axis=2)


@triton.jit
def _blockdiag(x3, NB: tl.constexpr, C: tl.constexpr):
    """[NB, 16, 16] -> [C, C] block-diagonal matrix."""
    ib = tl.arange(0, NB)
    eye = (ib[:, None] == ib[None, :]).to(tl.float32)
    return tl.reshape(x3[:, :, None, :] * eye[:, None, :, None], (C, C))


@triton.jit
def _inverse(Moff, Md, C: tl.constexpr, NB: tl.constexpr, PREC_INV: tl.constexpr):
    """(I + M)^-1 for M = blockdiag(Md) + Moff (both strictly lower): 16x16 forward substitution on the
    diagonal blocks (D), then X = D Moff is nilpotent (X^NB = 0): A = (I - X + X^2 - ...) D."""
    li = tl.arange(0, 16)
    eye16 = (li[:, None] == li[None, :]).to(tl.float32)
    Dinv = tl.zeros((NB, 16, 16), dtype=tl.float32) + eye16[None, :, :]
    for r in tl.static_range(1, 16):
        row = tl.sum(tl.where((li == r)[None, :, None], Md, 0.0), axis=1)  # [NB, 16]: M[r, :]
        new = tl.sum(row[:, :, None] * Dinv, axis=1)
        onehot = (li == r).to(tl.float32)
        Dinv = tl.where((li == r)[None, :, None], (onehot[None, :] - new)[:, None, :], Dinv)
    D = _blockdiag(Dinv, NB, C)
    if NB == 1:
        return D
    else:
        i = tl.arange(0, C)
        eye = (i[:, None] == i[None, :]).to(tl.float32)
        X = tl.dot(D, Moff, input_precision=PREC_INV)
        Y = eye - X
        for _ in tl.static_range(NB - 2):
            Y = eye - tl.dot(X, Y, input_precision=PREC_INV)
        return tl.dot(Y, D, input_precision=PREC_INV)


@triton.jit
def _gates(a, k, uu, low, tok, rmask, rk, km, hh, H, K: tl.constexpr, R: tl.constexpr, BR: tl.constexpr,
           HAS_CONTENT: tl.constexpr):
    """b = sigmoid(a + c) and c ([BK]) from low = U_down m."""
    a_t = _tile(a + hh * K, tok, rmask, rk, km, H * K)
    if HAS_CONTENT:
        rr = tl.arange(0, BR)
        up = tl.load(uu + hh * K * R + rk[:, None] * R + rr[None, :], mask=km[:, None] & (rr[None, :] < R),
                     other=0.0).to(tl.float32)
        c = tl.sum(up * low[None, :], axis=1)
        a_t = a_t + c[None, :]
    else:
        c = tl.zeros(rk.shape, dtype=tl.float32)
    return tl.sigmoid(a_t), c


@triton.jit
def carve_v2_prep_kernel(
    q, k, g, Gb, Pb,
    seq_start, seq_len, chunk_off, pos0, cseq, cj,
    H,
    K: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, BK: tl.constexpr,
    HAS_INIT: tl.constexpr, PREC: tl.constexpr,
):
    ci = tl.program_id(0)
    hh = tl.program_id(1)
    n = tl.load(cseq + ci)
    j = tl.load(cj + ci)
    bos = tl.load(seq_start + n)
    L = tl.load(seq_len + n)
    off = tl.load(chunk_off + n)
    if HAS_INIT:
        p = tl.load(pos0 + n)
    else:
        p = bos * 0
    t, rmask, tok = _chunk_rows(j, p, L, bos, C)
    rk = tl.arange(0, BK)
    km = rk < K
    i = tl.arange(0, C)
    g_t = _tile(g + hh * K, tok, rmask, rk, km, H * K)
    G = tl.cumsum(g_t, axis=0)
    tl.store(Gb + (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :], G, mask=rmask[:, None] & km[None, :])
    gl = tl.min(G, axis=0)
    G = tl.where((t >= L)[:, None], gl[None, :], G)
    q_t = _tile(q + hh * K, tok, rmask, rk, km, H * K)
    k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
    P = _off_fwd(q_t, k_t, G, C, NB, PREC) + _blockdiag(_pair_fwd(q_t, k_t, G, C, NB, BK), NB, C)
    cidx = ((off + j) * H + hh).to(tl.int64)
    tl.store(Pb + cidx * C * C + i[:, None] * C + i[None, :], P)


@triton.jit
def carve_v2_fwd_kernel(
    q, k, v, a, w, ud, uu, o, Gb, Pb,
    h0, m0, os0, pos0,
    hbuf, mbuf, abuf, osf,
    seq_start, seq_len, chunk_off,
    scale, H,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, VEC_W: tl.constexpr,
    LOWP: tl.constexpr, PREC: tl.constexpr, PREC_INV: tl.constexpr,
):
    n = tl.program_id(0)
    hh = tl.program_id(1)
    nh = (n * H + hh).to(tl.int64)
    bos = tl.load(seq_start + n)
    L = tl.load(seq_len + n)
    off = tl.load(chunk_off + n)
    if HAS_INIT:
        p = tl.load(pos0 + n)
    else:
        p = bos * 0
    NS = (p + L + C - 1) // C
    i = tl.arange(0, C)
    rk = tl.arange(0, BK)
    km = rk < K
    cv = tl.arange(0, BV)
    vm = cv < V
    smask = km[:, None] & vm[None, :]
    KV = K * V
    if HAS_INIT:
        S = tl.load(h0 + nh * KV + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
        m = tl.load(m0 + nh * V + cv, mask=vm, other=0.0)
        osum0 = tl.load(os0 + nh * V + cv, mask=vm, other=0.0)
    else:
        S = tl.zeros((BK, BV), dtype=tl.float32)
        m = tl.zeros((BV,), dtype=tl.float32)
        osum0 = tl.zeros((BV,), dtype=tl.float32)
    osum = osum0
    if HAS_CONTENT:
        rr = tl.arange(0, BR)
        udt = tl.load(ud + hh * R * V + rr[:, None] * V + cv[None, :], mask=(rr[:, None] < R) & vm[None, :],
                      other=0.0).to(tl.float32)
    li = tl.arange(0, 16)
    strict16 = (li[:, None] > li[None, :])[None, :, :]
    for j in range(0, NS):
        t, rmask, tok = _chunk_rows(j, p, L, bos, C)
        cidx = ((off + j) * H + hh).to(tl.int64)
        tl.store(hbuf + cidx * KV + rk[:, None] * V + cv[None, :], S, mask=smask)
        tl.store(mbuf + cidx * V + cv, m, mask=vm)
        if HAS_CONTENT:
            low = tl.sum(udt * m[None, :], axis=1)
        else:
            low = tl.zeros((2,), dtype=tl.float32)
        b, c = _gates(a, k, uu, low, tok, rmask, rk, km, hh, H, K, R, BR, HAS_CONTENT)
        k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
        q_t = _tile(q + hh * K, tok, rmask, rk, km, H * K)
        G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
        e = b * k_t
        Moff = _off_fwd(e, k_t, G, C, NB, PREC)
        Md = tl.where(strict16, _pair_fwd(e, k_t, G, C, NB, BK), 0.0)
        A = _inverse(Moff, Md, C, NB, PREC_INV)
        tl.store(abuf + cidx * C * C + i[:, None] * C + i[None, :], A)
        P = tl.load(Pb + cidx * C * C + i[:, None] * C + i[None, :])
        gam = tl.exp(G)
        v_t = _tile(v + hh * V, tok, rmask, cv, vm, H * V)
        if VEC_W:
            z = _tile(w + hh * V, tok, rmask, cv, vm, H * V) * v_t
        else:
            w_r = tl.load(w + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0).to(tl.float32)
            z = w_r[:, None] * v_t
        Sd = _cast(S, q, LOWP)
        rhs = z - tl.dot(_cast(gam * e, q, LOWP), Sd, input_precision=PREC)
        U = tl.dot(_cast(A, q, LOWP), _cast(rhs, q, LOWP), input_precision=PREC)
        Ud = _cast(U, q, LOWP)
        O = scale * (tl.dot(_cast(gam * q_t, q, LOWP), Sd, input_precision=PREC)
                     + tl.dot(_cast(P, q, LOWP), Ud, input_precision=PREC))
        tl.store(o + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :], O.to(o.dtype.element_ty),
                 mask=rmask[:, None] & vm[None, :])
        osum = osum + tl.sum(tl.where(rmask[:, None], O, 0.0), axis=0)
        complete = (j + 1) * C <= p + L
        m = tl.where(complete, osum / C, m)
        osum = tl.where(complete, 0.0, osum)
        kt = k_t * tl.exp(gl[None, :] - G)
        S = tl.exp(gl)[:, None] * S + tl.dot(tl.trans(_cast(kt, q, LOWP)), Ud, input_precision=PREC)
    fidx = ((off + NS) * H + hh).to(tl.int64)
    tl.store(hbuf + fidx * KV + rk[:, None] * V + cv[None, :], S, mask=smask)
    tl.store(mbuf + fidx * V + cv, m, mask=vm)
    tl.store(osf + nh * V + cv, osum, mask=vm)


@triton.jit
def carve_v2_bwd_kernel(
    q, k, v, a, w, ud, uu, do, Gb, Pb,
    pos0, hbuf, mbuf, abuf,
    dht, dmf, dosf,
    dqb, dkb, dGb, da, dv, dw, dPb, dMb, dcb, dlowb, dS0, dm0, dos0,
    seq_start, seq_len, chunk_off,
    scale, H,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, FULL_CONTENT_GRAD: tl.constexpr, VEC_W: tl.constexpr,
    HAS_DHT: tl.constexpr, HAS_DMF: tl.constexpr, HAS_DOSF: tl.constexpr,
    LOWP: tl.constexpr, PREC: tl.constexpr,
):
    n = tl.program_id(0)
    hh = tl.program_id(1)
    nh = (n * H + hh).to(tl.int64)
    bos = tl.load(seq_start + n)
    L = tl.load(seq_len + n)
    off = tl.load(chunk_off + n)
    if HAS_INIT:
        p = tl.load(pos0 + n)
    else:
        p = bos * 0
    NS = (p + L + C - 1) // C
    i = tl.arange(0, C)
    rk = tl.arange(0, BK)
    km = rk < K
    cv = tl.arange(0, BV)
    vm = cv < V
    smask = km[:, None] & vm[None, :]
    KV = K * V
    if HAS_DHT:
        dS = tl.load(dht + nh * KV + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
    else:
        dS = tl.zeros((BK, BV), dtype=tl.float32)
    if HAS_DMF:
        dmn = tl.load(dmf + nh * V + cv, mask=vm, other=0.0)
    else:
        dmn = tl.zeros((BV,), dtype=tl.float32)
    if HAS_DOSF:
        dosv = tl.load(dosf + nh * V + cv, mask=vm, other=0.0)
    else:
        dosv = tl.zeros((BV,), dtype=tl.float32)
    dos0v = dosv
    if HAS_CONTENT:
        rr = tl.arange(0, BR)
        udt = tl.load(ud + hh * R * V + rr[:, None] * V + cv[None, :], mask=(rr[:, None] < R) & vm[None, :],
                      other=0.0).to(tl.float32)
        upt = tl.load(uu + hh * K * R + rk[:, None] * R + rr[None, :], mask=km[:, None] & (rr[None, :] < R),
                      other=0.0).to(tl.float32)
    strict = i[:, None] > i[None, :]
    lower = i[:, None] >= i[None, :]
    li = tl.arange(0, 16)
    strict16 = (li[:, None] > li[None, :])[None, :, :]
    for jj in range(0, NS):
        j = NS - 1 - jj
        t, rmask, tok = _chunk_rows(j, p, L, bos, C)
        cidx = ((off + j) * H + hh).to(tl.int64)
        complete = (j + 1) * C <= p + L
        S0 = tl.load(hbuf + cidx * KV + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
        if HAS_CONTENT:
            m = tl.load(mbuf + cidx * V + cv, mask=vm, other=0.0)
            low = tl.sum(udt * m[None, :], axis=1)
        else:
            low = tl.zeros((2,), dtype=tl.float32)
        b, c = _gates(a, k, uu, low, tok, rmask, rk, km, hh, H, K, R, BR, HAS_CONTENT)
        k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
        q_t = _tile(q + hh * K, tok, rmask, rk, km, H * K)
        G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
        e = b * k_t
        A = tl.load(abuf + cidx * C * C + i[:, None] * C + i[None, :])
        P = tl.load(Pb + cidx * C * C + i[:, None] * C + i[None, :])
        gam = tl.exp(G)
        egl = tl.exp(gl)
        kdec = tl.exp(gl[None, :] - G)
        kt = k_t * kdec
        gq = gam * q_t
        ge = gam * e
        v_t = _tile(v + hh * V, tok, rmask, cv, vm, H * V)
        if VEC_W:
            w_t = _tile(w + hh * V, tok, rmask, cv, vm, H * V)
        else:
            w_r = tl.load(w + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0).to(tl.float32)
            w_t = w_r[:, None] + tl.zeros((C, BV), dtype=tl.float32)
        S0d = _cast(S0, q, LOWP)
        rhs = w_t * v_t - tl.dot(_cast(ge, q, LOWP), S0d, input_precision=PREC)
        U = tl.dot(_cast(A, q, LOWP), _cast(rhs, q, LOWP), input_precision=PREC)
        corr = tl.where(complete, dmn / C, dosv)
        dO = _tile(do + hh * V, tok, rmask, cv, vm, H * V)
        dO = tl.where(rmask[:, None] & vm[None, :], dO + corr[None, :], 0.0)
        dOd = _cast(dO, q, LOWP)
        dSd = _cast(dS, q, LOWP)
        Ud = _cast(U, q, LOWP)
        dU = scale * tl.dot(tl.trans(_cast(P, q, LOWP)), dOd, input_precision=PREC) + tl.dot(
            _cast(kt, q, LOWP), dSd, input_precision=PREC)
        dR = tl.dot(tl.trans(_cast(A, q, LOWP)), _cast(dU, q, LOWP), input_precision=PREC)
        dRd = _cast(dR, q, LOWP)
        vmask = rmask[:, None] & vm[None, :]
        tl.store(dv + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :], (w_t * dR).to(dv.dtype.element_ty),
                 mask=vmask)
        if VEC_W:
            tl.store(dw + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :],
                     (v_t * dR).to(dw.dtype.element_ty), mask=vmask)
        else:
            tl.store(dw + tok.to(tl.int64) * H + hh, tl.sum(v_t * dR, axis=1).to(dw.dtype.element_ty), mask=rmask)
        dM = tl.where(strict, -tl.dot(dRd, tl.trans(Ud), input_precision=PREC), 0.0)
        dP = tl.where(lower, scale * tl.dot(dOd, tl.trans(Ud), input_precision=PREC), 0.0)
        tl.store(dMb + cidx * C * C + i[:, None] * C + i[None, :], dM)
        tl.store(dPb + cidx * C * C + i[:, None] * C + i[None, :], dP)
        dgq = scale * tl.dot(dOd, tl.trans(S0d), input_precision=PREC)
        dge = -tl.dot(dRd, tl.trans(S0d), input_precision=PREC)
        dkt = tl.dot(Ud, tl.trans(dSd), input_precision=PREC)
        dgl = tl.sum(S0 * dS, axis=1)
        dS = egl[:, None] * dS + scale * tl.dot(tl.trans(_cast(gq, q, LOWP)), dOd, input_precision=PREC) - tl.dot(
            tl.trans(_cast(ge, q, LOWP)), dRd, input_precision=PREC)
        deM, _unused = _off_bwd(dM, e, k_t, G, C, NB, PREC, True, False)
        deMd, _unused2 = _pair_bwd(tl.where(strict16, _diag_blocks(dM, NB), 0.0), e, k_t, G, C, NB, BK, False)
        deM += deMd
        de = gam * dge + deM
        dlogit = tl.where(rmask[:, None], k_t * de * b * (1.0 - b), 0.0)
        dGp = gq * dgq + ge * dge - kt * dkt + e * deM
        dGp += tl.where((i == C - 1)[:, None], (tl.sum(kt * dkt, axis=0) + egl * dgl)[None, :], 0.0)
        tmask = rmask[:, None] & km[None, :]
        tb = (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :]
        tl.store(dqb + tb, gam * dgq, mask=tmask)
        tl.store(dkb + tb, kdec * dkt + b * de, mask=tmask)
        tl.store(da + tb, dlogit.to(da.dtype.element_ty), mask=tmask)
        # dG at the chunk's rows, including the last row of the grid (C - 1) which may be masked:
        # the post-pass sums it back (reverse cumsum) onto the valid rows
        pb = (cidx * C + i[:, None]) * K + rk[None, :]
        tl.store(dGb + pb, dGp, mask=km[None, :] & (i[:, None] >= 0))
        dm_new = tl.where(complete, 0.0, dmn)
        if HAS_CONTENT:
            dc = tl.sum(dlogit, axis=0)
            tl.store(dcb + cidx * K + rk, dc, mask=km)
            dlow = tl.sum(upt * dc[:, None], axis=0)
            tl.store(dlowb + cidx * R + rr, dlow, mask=rr < R)
            if FULL_CONTENT_GRAD:
                dm_new += tl.sum(udt * dlow[:, None], axis=0)
        dos0v = tl.where(j == 0, tl.where(complete, dmn / C, dosv), dos0v)
        dmn = dm_new
    tl.store(dS0 + nh * KV + rk[:, None] * V + cv[None, :], dS, mask=smask)
    tl.store(dm0 + nh * V + cv, dmn, mask=vm)
    tl.store(dos0 + nh * V + cv, dos0v, mask=vm)


@triton.jit
def carve_v2_post_kernel(
    q, k, a, uu, Gb, mbuf, ud, dPb, dMb, dqb, dkb, dGb, dq, dk, dg,
    seq_start, seq_len, chunk_off, pos0, cseq, cj,
    H,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, PREC: tl.constexpr,
):
    ci = tl.program_id(0)
    hh = tl.program_id(1)
    n = tl.load(cseq + ci)
    j = tl.load(cj + ci)
    bos = tl.load(seq_start + n)
    L = tl.load(seq_len + n)
    off = tl.load(chunk_off + n)
    if HAS_INIT:
        p = tl.load(pos0 + n)
    else:
        p = bos * 0
    t, rmask, tok = _chunk_rows(j, p, L, bos, C)
    rk = tl.arange(0, BK)
    km = rk < K
    i = tl.arange(0, C)
    cidx = ((off + j) * H + hh).to(tl.int64)
    if HAS_CONTENT:
        cv = tl.arange(0, BV)
        rr = tl.arange(0, BR)
        m = tl.load(mbuf + cidx * V + cv, mask=cv < V, other=0.0)
        udt = tl.load(ud + hh * R * V + rr[:, None] * V + cv[None, :], mask=(rr[:, None] < R) & (cv < V)[None, :],
                      other=0.0).to(tl.float32)
        low = tl.sum(udt * m[None, :], axis=1)
    else:
        low = tl.zeros((2,), dtype=tl.float32)
    b, c = _gates(a, k, uu, low, tok, rmask, rk, km, hh, H, K, R, BR, HAS_CONTENT)
    k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
    q_t = _tile(q + hh * K, tok, rmask, rk, km, H * K)
    G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
    e = b * k_t
    dP = tl.load(dPb + cidx * C * C + i[:, None] * C + i[None, :])
    dM = tl.load(dMb + cidx * C * C + i[:, None] * C + i[None, :])
    dqP, dkP = _off_bwd(dP, q_t, k_t, G, C, NB, PREC, True, True)
    dqPd, dkPd = _pair_bwd(_diag_blocks(dP, NB), q_t, k_t, G, C, NB, BK, True)
    _u, dkM = _off_bwd(dM, e, k_t, G, C, NB, PREC, False, True)
    _u2, dkMd = _pair_bwd(_diag_blocks(dM, NB), e, k_t, G, C, NB, BK, True)
    dqP += dqPd
    dkK = dkP + dkPd + dkM + dkMd
    dG = tl.load(dGb + (cidx * C + i[:, None]) * K + rk[None, :], mask=km[None, :] & (i[:, None] >= 0), other=0.0)
    dG += q_t * dqP - k_t * dkK
    dgv = tl.sum(dG, axis=0)[None, :] - tl.cumsum(dG, axis=0) + dG
    tmask = rmask[:, None] & km[None, :]
    tb = (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :]
    dq_t = tl.load(dqb + tb, mask=tmask, other=0.0) + dqP
    dk_t = tl.load(dkb + tb, mask=tmask, other=0.0) + dkK
    tl.store(dq + tb, dq_t.to(dq.dtype.element_ty), mask=tmask)
    tl.store(dk + tb, dk_t.to(dk.dtype.element_ty), mask=tmask)
    tl.store(dg + tb, dgv.to(dg.dtype.element_ty), mask=tmask)


__all__ = ["carve_v2_prep_kernel", "carve_v2_fwd_kernel", "carve_v2_bwd_kernel", "carve_v2_post_kernel", "triton"]
