"""Triton kernels of the wide CARVE path (wide.py): forward sweep and backward sweep for any head dim
up to 256.

Design: the content gate of chunk n reads the mean output of chunk n-1, so the
operator is sequential over chunks. One program owns one (sequence, head) -- or, when content is off,
one (sequence, head, value tile) -- and loops over the chunks of its sequence. The K x V fp32 state is
streamed through a per-chunk buffer in global memory (it stays in L2), which doubles as the chunk-start
states the backward needs. Per chunk:

  phase A  (K slices of BKS channels): the couplings M (strictly lower) and P (lower, with diagonal).
           Off-diagonal 16-row sub-blocks factor through the cumulative decay at the end of the earlier
           sub-block (two factors, each <= 1); diagonal sub-blocks use exact pairwise differences
           (a [NB, 16, 16, BKS] tile), so no exponent is ever positive.
  phase B  A = (I + M)^-1: forward substitution inside each 16x16 diagonal block, then the nilpotent
           block-lower remainder X = D N by a finite Neumann series (X^NB = 0).
  phase C  (V tiles): U = A (W*V - (Gam*e) S0), O = scale ((Gam*q) S0 + P U), the chunk mean, S_next.

Rows of a chunk tile are positions of the *virtual* chunk grid of the sequence: a sequence that starts
at position p inside a chunk (carried state) has its first tile's leading p rows masked. Masked rows
load as zeros (k = 0, g = 0), so they touch neither the couplings nor the state.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .tiles import seq_info


@triton.jit
def _row_tile_ptrs(base, tok, cols, row_stride):
    return base + tok[:, None].to(tl.int64) * row_stride + cols[None, :]


@triton.jit
def _load_slice(x, tok, rmask, cols, cmask, row_stride):
    ptr = x + tok[:, None].to(tl.int64) * row_stride + cols[None, :]
    return tl.load(ptr, mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _expand_blockdiag(x3, NB: tl.constexpr, C: tl.constexpr):
    """[NB, 16, 16] diagonal blocks -> [C, C] block-diagonal matrix."""
    ib = tl.arange(0, NB)
    eye = (ib[:, None] == ib[None, :]).to(tl.float32)
    x4 = x3[:, :, None, :] * eye[:, None, :, None]
    return tl.reshape(x4, (C, C))


@triton.jit
def _diag_blocks(x, NB: tl.constexpr):
    """[C, C] -> its [NB, 16, 16] diagonal blocks."""
    ib = tl.arange(0, NB)
    eye = (ib[:, None] == ib[None, :]).to(tl.float32)
    x4 = tl.reshape(x, (NB, 16, NB, 16))
    return tl.sum(x4 * eye[:, None, :, None], axis=2)


@triton.jit
def _gates_slice(q, k, g, a, uu, low, tok, rmask, kk, hh, H, K: tl.constexpr, R: tl.constexpr,
                 BKS: tl.constexpr, BR: tl.constexpr, HAS_CONTENT: tl.constexpr):
    """Loads a [C, BKS] channel slice and returns (q, k, G, e, b) in fp32."""
    cols = kk + tl.arange(0, BKS)
    cm = cols < K
    q_s = _load_slice(q + hh * K, tok, rmask, cols, cm, H * K)
    k_s = _load_slice(k + hh * K, tok, rmask, cols, cm, H * K)
    g_s = _load_slice(g + hh * K, tok, rmask, cols, cm, H * K)
    a_s = _load_slice(a + hh * K, tok, rmask, cols, cm, H * K)
    G_s = tl.cumsum(g_s, axis=0)
    if HAS_CONTENT:
        rr = tl.arange(0, BR)
        up = tl.load(uu + hh * K * R + cols[:, None] * R + rr[None, :],
                     mask=cm[:, None] & (rr[None, :] < R), other=0.0).to(tl.float32)
        c_s = tl.sum(up * low[None, :], axis=1)
        a_s = a_s + c_s[None, :]
    b_s = tl.sigmoid(a_s)
    e_s = b_s * k_s
    return q_s, k_s, G_s, e_s, b_s


@triton.jit
def _content_low(ud, mptr, hh, V: tl.constexpr, R: tl.constexpr, BVF: tl.constexpr, BR: tl.constexpr):
    """low = U_down m  ([BR]) and the U_down tile [BR, BVF]."""
    vv = tl.arange(0, BVF)
    rr = tl.arange(0, BR)
    m = tl.load(mptr + vv, mask=vv < V, other=0.0)
    udt = tl.load(ud + hh * R * V + rr[:, None] * V + vv[None, :],
                  mask=(rr[:, None] < R) & (vv[None, :] < V), other=0.0).to(tl.float32)
    return tl.sum(udt * m[None, :], axis=1), udt


@triton.jit
def _couplings(q, k, g, a, uu, low, tok, rmask, hh, H, K: tl.constexpr, R: tl.constexpr, C: tl.constexpr,
               NB: tl.constexpr, BKS: tl.constexpr, BR: tl.constexpr, HAS_CONTENT: tl.constexpr,
               NEED_M: tl.constexpr, PREC: tl.constexpr):
    """Phase A. Returns P [C, C] (lower incl. diagonal, full), M_off [C, C] (block-lower part of M),
    M_diag [NB, 16, 16] (strictly lower diagonal blocks of M)."""
    i = tl.arange(0, C)
    Poff = tl.zeros((C, C), dtype=tl.float32)
    Moff = tl.zeros((C, C), dtype=tl.float32)
    Pd = tl.zeros((NB, 16, 16), dtype=tl.float32)
    Md = tl.zeros((NB, 16, 16), dtype=tl.float32)
    li = tl.arange(0, 16)
    for kk in range(0, K, BKS):
        q_s, k_s, G_s, e_s, b_s = _gates_slice(q, k, g, a, uu, low, tok, rmask, kk, hh, H, K, R, BKS, BR,
                                               HAS_CONTENT)
        for beta in tl.static_range(NB - 1):
            last = beta * 16 + 15
            ref = tl.sum(tl.where((i == last)[:, None], G_s, 0.0), axis=0)
            later = (i > last)[:, None]
            inblk = ((i >= beta * 16) & (i <= last))[:, None]
            fl = tl.where(later, tl.exp(tl.where(later, G_s - ref[None, :], 0.0)), 0.0)
            fr = tl.where(inblk, tl.exp(tl.where(inblk, ref[None, :] - G_s, 0.0)), 0.0)
            rk = k_s * fr
            Poff += tl.dot(q_s * fl, tl.trans(rk), input_precision=PREC)
            if NEED_M:
                Moff += tl.dot(e_s * fl, tl.trans(rk), input_precision=PREC)
        # diagonal sub-blocks: one column s (= j inside every block) at a time, exact exp(G_r - G_s)
        G3 = tl.reshape(G_s, (NB, 16, BKS))
        k3 = tl.reshape(k_s, (NB, 16, BKS))
        q3 = tl.reshape(q_s, (NB, 16, BKS))
        if NEED_M:
            e3 = tl.reshape(e_s, (NB, 16, BKS))
        for jc in tl.static_range(16):
            sel = (li == jc)[None, :, None]
            Gs = tl.sum(tl.where(sel, G3, 0.0), axis=1)  # [NB, BKS]
            ks = tl.sum(tl.where(sel, k3, 0.0), axis=1)
            ok = (li >= jc)[None, :, None]
            KE = ks[:, None, :] * tl.exp(tl.where(ok, G3 - Gs[:, None, :], float("-inf")))
            colsel = (li == jc)[None, None, :]
            Pd += tl.where(colsel, tl.sum(q3 * KE, axis=2)[:, :, None], 0.0)
            if NEED_M:
                Md += tl.where(colsel, tl.sum(e3 * KE, axis=2)[:, :, None], 0.0)
    P = Poff + _expand_blockdiag(Pd, NB, C)
    strict = (li[:, None] > li[None, :])[None, :, :]
    Md = tl.where(strict, Md, 0.0)
    return P, Moff, Md


@triton.jit
def _unit_lower_inverse(Moff, Md, C: tl.constexpr, NB: tl.constexpr):
    """Phase B: (I + M)^-1 for M = blockdiag(Md) + Moff (both strictly lower)."""
    li = tl.arange(0, 16)
    eye16 = (li[:, None] == li[None, :]).to(tl.float32)
    Dinv = tl.zeros((NB, 16, 16), dtype=tl.float32) + eye16[None, :, :]
    for r in tl.static_range(1, 16):
        row = tl.sum(tl.where((li == r)[None, :, None], Md, 0.0), axis=1)  # [NB, 16]: M[r, :]
        new = tl.sum(row[:, :, None] * Dinv, axis=1)  # [NB, 16]: M[r, :] @ Dinv
        onehot = (li == r).to(tl.float32)
        Dinv = tl.where((li == r)[None, :, None], (onehot[None, :] - new)[:, None, :], Dinv)
    D = _expand_blockdiag(Dinv, NB, C)
    i = tl.arange(0, C)
    eye = (i[:, None] == i[None, :]).to(tl.float32)
    X = tl.dot(D, Moff, input_precision="ieee")
    Y = eye
    for _ in tl.static_range(NB - 1):
        Y = eye - tl.dot(X, Y, input_precision="ieee")
    return tl.dot(Y, D, input_precision="ieee")


@triton.jit
def carve_wide_fwd_kernel(
    q, k, v, g, a, w, ud, uu, o,
    h0, m0, os0, pos0,
    hbuf, mbuf, abuf, osf,
    seq_start, seq_len, chunk_off,
    scale,
    H, VPP,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr,
    BKS: tl.constexpr, BV: tl.constexpr, BVF: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, VEC_W: tl.constexpr, PREC: tl.constexpr,
):
    n = tl.program_id(0)
    hh = tl.program_id(1)
    pv = tl.program_id(2)
    bos, L, off, p = seq_info(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT)
    NS = (p + L + C - 1) // C
    v_lo = pv * VPP
    v_hi = tl.minimum(v_lo + VPP, V)
    KV = K * V
    i = tl.arange(0, C)
    bvv = tl.arange(0, BV)

    # chunk-start state 0, m_prev 0, o_sum (final o_sum for an empty call)
    for kk in range(0, K, BKS):
        rk = kk + tl.arange(0, BKS)
        for vt in range(v_lo, v_hi, BV):
            cv = vt + bvv
            msk = (rk[:, None] < K) & (cv[None, :] < v_hi)
            if HAS_INIT:
                s0 = tl.load(h0 + (n * H + hh).to(tl.int64) * KV + rk[:, None] * V + cv[None, :], mask=msk, other=0.0)
            else:
                s0 = tl.zeros((BKS, BV), dtype=tl.float32)
            tl.store(hbuf + (off * H + hh).to(tl.int64) * KV + rk[:, None] * V + cv[None, :], s0, mask=msk)
    for vt in range(v_lo, v_hi, BV):
        cv = vt + bvv
        vm = cv < v_hi
        if HAS_INIT:
            mm = tl.load(m0 + (n * H + hh) * V + cv, mask=vm, other=0.0)
            oo = tl.load(os0 + (n * H + hh) * V + cv, mask=vm, other=0.0)
        else:
            mm = tl.zeros((BV,), dtype=tl.float32)
            oo = tl.zeros((BV,), dtype=tl.float32)
        tl.store(mbuf + (off * H + hh) * V + cv, mm, mask=vm)
        tl.store(osf + (n * H + hh) * V + cv, oo, mask=vm)
    tl.debug_barrier()

    for j in range(0, NS):
        t = j * C + i - p
        rmask = (t >= 0) & (t < L)
        tok = bos + t
        complete = (j + 1) * C <= p + L
        cidx = (off + j) * H + hh
        if HAS_CONTENT:
            low, udt = _content_low(ud, mbuf + cidx * V, hh, V, R, BVF, BR)
        else:
            low = tl.zeros((16,), dtype=tl.float32)
        P, Moff, Md = _couplings(q, k, g, a, uu, low, tok, rmask, hh, H, K, R, C, NB, BKS, BR, HAS_CONTENT,
                                 True, PREC)
        A = _unit_lower_inverse(Moff, Md, C, NB)
        if pv == 0:
            tl.store(abuf + cidx.to(tl.int64) * C * C + i[:, None] * C + i[None, :], A)
        for vt in range(v_lo, v_hi, BV):
            cv = vt + bvv
            vm = cv < v_hi
            accR = tl.zeros((C, BV), dtype=tl.float32)
            accO = tl.zeros((C, BV), dtype=tl.float32)
            for kk in range(0, K, BKS):
                q_s, k_s, G_s, e_s, b_s = _gates_slice(q, k, g, a, uu, low, tok, rmask, kk, hh, H, K, R, BKS,
                                                       BR, HAS_CONTENT)
                gam = tl.exp(G_s)
                rk = kk + tl.arange(0, BKS)
                s0 = tl.load(hbuf + cidx.to(tl.int64) * KV + rk[:, None] * V + cv[None, :],
                             mask=(rk[:, None] < K) & vm[None, :], other=0.0)
                accR += tl.dot(gam * e_s, s0, input_precision=PREC)
                accO += tl.dot(gam * q_s, s0, input_precision=PREC)
            v_t = _load_slice(v + hh * V, tok, rmask, cv, vm, H * V)
            if VEC_W:
                w_t = _load_slice(w + hh * V, tok, rmask, cv, vm, H * V)
                z = w_t * v_t
            else:
                w_r = tl.load(w + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0).to(tl.float32)
                z = w_r[:, None] * v_t
            U = tl.dot(A, z - accR, input_precision=PREC)
            O = scale * (accO + tl.dot(P, U, input_precision=PREC))
            tl.store(_row_tile_ptrs(o + hh * V, tok, cv, H * V), O.to(o.dtype.element_ty),
                     mask=rmask[:, None] & vm[None, :])
            osum = tl.sum(tl.where(rmask[:, None], O, 0.0), axis=0)
            if HAS_INIT:
                if j == 0:
                    osum += tl.load(os0 + (n * H + hh) * V + cv, mask=vm, other=0.0)
            nidx = cidx + H
            if complete:
                mnew = osum / C
                tl.store(osf + (n * H + hh) * V + cv, tl.zeros((BV,), dtype=tl.float32), mask=vm)
            else:
                mnew = tl.load(mbuf + cidx * V + cv, mask=vm, other=0.0)
                tl.store(osf + (n * H + hh) * V + cv, osum, mask=vm)
            tl.store(mbuf + nidx * V + cv, mnew, mask=vm)
            # next chunk-start state
            for kk in range(0, K, BKS):
                rk = kk + tl.arange(0, BKS)
                cm = rk < K
                k_s = _load_slice(k + hh * K, tok, rmask, rk, cm, H * K)
                g_s = _load_slice(g + hh * K, tok, rmask, rk, cm, H * K)
                G_s = tl.cumsum(g_s, axis=0)
                gl = tl.sum(g_s, axis=0)
                kt = k_s * tl.exp(gl[None, :] - G_s)
                smask = cm[:, None] & vm[None, :]
                s0 = tl.load(hbuf + cidx.to(tl.int64) * KV + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
                s1 = tl.exp(gl)[:, None] * s0 + tl.dot(tl.trans(kt), U, input_precision=PREC)
                tl.store(hbuf + nidx.to(tl.int64) * KV + rk[:, None] * V + cv[None, :], s1, mask=smask)
        tl.debug_barrier()


@triton.jit
def carve_wide_bwd_kernel(
    q, k, v, g, a, w, ud, uu, do,
    dq, dk, dv, dg, da, dw,
    pos0, hbuf, mbuf, abuf,
    dht, dosf, dsb, scr, dmbuf, dcbuf, dlowbuf, dos0,
    seq_start, seq_len, chunk_off,
    scale,
    H, VPP, NPROG_V,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr,
    BKS: tl.constexpr, BV: tl.constexpr, BVF: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, FULL_CONTENT_GRAD: tl.constexpr,
    VEC_W: tl.constexpr, HAS_DHT: tl.constexpr, HAS_DOSF: tl.constexpr, PREC: tl.constexpr,
):
    n = tl.program_id(0)
    hh = tl.program_id(1)
    pv = tl.program_id(2)
    bos, L, off, p = seq_info(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT)
    NS = (p + L + C - 1) // C
    v_lo = pv * VPP
    v_hi = tl.minimum(v_lo + VPP, V)
    KV = K * V
    nh = (n * H + hh).to(tl.int64)
    i = tl.arange(0, C)
    li = tl.arange(0, 16)
    bvv = tl.arange(0, BV)
    # K-sized gradients go to [tokens, H, NPROG_V, K] fp32 planes, summed afterwards when V is split

    # dS after the last chunk -> slot NS % 2
    slot = NS % 2
    for kk in range(0, K, BKS):
        rk = kk + tl.arange(0, BKS)
        for vt in range(v_lo, v_hi, BV):
            cv = vt + bvv
            msk = (rk[:, None] < K) & (cv[None, :] < v_hi)
            if HAS_DHT:
                d0 = tl.load(dht + nh * KV + rk[:, None] * V + cv[None, :], mask=msk, other=0.0)
            else:
                d0 = tl.zeros((BKS, BV), dtype=tl.float32)
            tl.store(dsb + (nh * 2 + slot) * KV + rk[:, None] * V + cv[None, :], d0, mask=msk)
    for vt in range(v_lo, v_hi, BV):
        cv = vt + bvv
        vm = cv < v_hi
        if HAS_DOSF:
            x = tl.load(dosf + nh * V + cv, mask=vm, other=0.0)
        else:
            x = tl.zeros((BV,), dtype=tl.float32)
        tl.store(dos0 + nh * V + cv, x, mask=vm)
    tl.debug_barrier()

    for jj in range(0, NS):
        j = NS - 1 - jj
        t = j * C + i - p
        rmask = (t >= 0) & (t < L)
        tok = bos + t
        complete = (j + 1) * C <= p + L
        cidx = (off + j) * H + hh
        rd = (nh * 2 + (j + 1) % 2) * KV  # dS after this chunk
        wr = (nh * 2 + j % 2) * KV  # dS before this chunk
        if HAS_CONTENT:
            low, udt = _content_low(ud, mbuf + cidx * V, hh, V, R, BVF, BR)
        else:
            low = tl.zeros((16,), dtype=tl.float32)
        P, Moff, Md = _couplings(q, k, g, a, uu, low, tok, rmask, hh, H, K, R, C, NB, BKS, BR, HAS_CONTENT,
                                 False, PREC)
        A = tl.load(abuf + cidx.to(tl.int64) * C * C + i[:, None] * C + i[None, :])
        dM = tl.zeros((C, C), dtype=tl.float32)
        dP = tl.zeros((C, C), dtype=tl.float32)
        dwr = tl.zeros((C,), dtype=tl.float32)
        # ---- pass over value tiles: U, dU, dR, dv, dw, dM, dP
        for vt in range(v_lo, v_hi, BV):
            cv = vt + bvv
            vm = cv < v_hi
            dmp = tl.load(dmbuf + (cidx + H) * V + cv, mask=vm, other=0.0)
            if complete:
                corr = dmp / C
            else:
                if HAS_DOSF:
                    corr = tl.load(dosf + nh * V + cv, mask=vm, other=0.0)
                else:
                    corr = tl.zeros((BV,), dtype=tl.float32)
            accR = tl.zeros((C, BV), dtype=tl.float32)
            accU = tl.zeros((C, BV), dtype=tl.float32)
            for kk in range(0, K, BKS):
                q_s, k_s, G_s, e_s, b_s = _gates_slice(q, k, g, a, uu, low, tok, rmask, kk, hh, H, K, R, BKS,
                                                       BR, HAS_CONTENT)
                rk = kk + tl.arange(0, BKS)
                smask = (rk[:, None] < K) & vm[None, :]
                s0 = tl.load(hbuf + cidx.to(tl.int64) * KV + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
                ds1 = tl.load(dsb + rd + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
                gl = tl.sum(tl.where((i == C - 1)[:, None], G_s, 0.0), axis=0)
                kt = k_s * tl.exp(gl[None, :] - G_s)
                accR += tl.dot(tl.exp(G_s) * e_s, s0, input_precision=PREC)
                accU += tl.dot(kt, ds1, input_precision=PREC)
            v_t = _load_slice(v + hh * V, tok, rmask, cv, vm, H * V)
            if VEC_W:
                w_t = _load_slice(w + hh * V, tok, rmask, cv, vm, H * V)
                z = w_t * v_t
            else:
                w_r = tl.load(w + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0).to(tl.float32)
                w_t = w_r[:, None] + tl.zeros((C, BV), dtype=tl.float32)
                z = w_t * v_t
            dO = _load_slice(do + hh * V, tok, rmask, cv, vm, H * V)
            dO = tl.where(rmask[:, None], dO + corr[None, :], 0.0)
            U = tl.dot(A, z - accR, input_precision=PREC)
            dU = accU + scale * tl.dot(tl.trans(P), dO, input_precision=PREC)
            dR = tl.dot(tl.trans(A), dU, input_precision=PREC)
            tl.store(_row_tile_ptrs(dv + hh * V, tok, cv, H * V), (w_t * dR).to(dv.dtype.element_ty),
                     mask=rmask[:, None] & vm[None, :])
            if VEC_W:
                tl.store(_row_tile_ptrs(dw + hh * V, tok, cv, H * V), (v_t * dR).to(dw.dtype.element_ty),
                         mask=rmask[:, None] & vm[None, :])
            else:
                dwr += tl.sum(v_t * dR, axis=1)
            dM -= tl.dot(dR, tl.trans(U), input_precision=PREC)
            dP += scale * tl.dot(dO, tl.trans(U), input_precision=PREC)
            sp = scr + nh * 3 * C * V + i[:, None] * V + cv[None, :]
            smk = vm[None, :] & (i[:, None] >= 0)
            tl.store(sp, U, mask=smk)
            tl.store(sp + C * V, dR, mask=smk)
            tl.store(sp + 2 * C * V, dO, mask=smk)
        if not VEC_W:
            tl.store(dw + (tok.to(tl.int64) * H + hh) * NPROG_V + pv, dwr, mask=rmask)
        strict = i[:, None] > i[None, :]
        dM = tl.where(strict, dM, 0.0)
        dP = tl.where(i[:, None] >= i[None, :], dP, 0.0)
        dM3 = _diag_blocks(dM, NB)
        dP3 = _diag_blocks(dP, NB)
        tl.debug_barrier()
        if HAS_CONTENT:
            dlow = tl.zeros((BR,), dtype=tl.float32)
            rr = tl.arange(0, BR)
        # ---- pass over key slices: dq, dk, dg, da, dS0
        for kk in range(0, K, BKS):
            q_s, k_s, G_s, e_s, b_s = _gates_slice(q, k, g, a, uu, low, tok, rmask, kk, hh, H, K, R, BKS,
                                                   BR, HAS_CONTENT)
            rk = kk + tl.arange(0, BKS)
            cm = rk < K
            gam = tl.exp(G_s)
            gl = tl.sum(tl.where((i == C - 1)[:, None], G_s, 0.0), axis=0)
            kdec = tl.exp(gl[None, :] - G_s)
            kt = k_s * kdec
            gq = gam * q_s
            ge = gam * e_s
            dGq = tl.zeros((C, BKS), dtype=tl.float32)
            dGe = tl.zeros((C, BKS), dtype=tl.float32)
            dKt = tl.zeros((C, BKS), dtype=tl.float32)
            dgl = tl.zeros((BKS,), dtype=tl.float32)
            for vt in range(v_lo, v_hi, BV):
                cv = vt + bvv
                vm = cv < v_hi
                smask = cm[:, None] & vm[None, :]
                s0 = tl.load(hbuf + cidx.to(tl.int64) * KV + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
                ds1 = tl.load(dsb + rd + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
                sp = scr + nh * 3 * C * V + i[:, None] * V + cv[None, :]
                smk = vm[None, :] & (i[:, None] >= 0)
                U = tl.load(sp, mask=smk, other=0.0)
                dR = tl.load(sp + C * V, mask=smk, other=0.0)
                dO = tl.load(sp + 2 * C * V, mask=smk, other=0.0)
                dGq += scale * tl.dot(dO, tl.trans(s0), input_precision=PREC)
                dGe -= tl.dot(dR, tl.trans(s0), input_precision=PREC)
                dKt += tl.dot(U, tl.trans(ds1), input_precision=PREC)
                dgl += tl.sum(s0 * ds1, axis=1)
                ds0 = (tl.exp(gl)[:, None] * ds1 + scale * tl.dot(tl.trans(gq), dO, input_precision=PREC)
                       - tl.dot(tl.trans(ge), dR, input_precision=PREC))
                tl.store(dsb + wr + rk[:, None] * V + cv[None, :], ds0, mask=smask)
            # decayed products: off-diagonal sub-blocks
            dqP = tl.zeros((C, BKS), dtype=tl.float32)
            dkP = tl.zeros((C, BKS), dtype=tl.float32)
            deM = tl.zeros((C, BKS), dtype=tl.float32)
            dkM = tl.zeros((C, BKS), dtype=tl.float32)
            for beta in tl.static_range(NB - 1):
                last = beta * 16 + 15
                ref = tl.sum(tl.where((i == last)[:, None], G_s, 0.0), axis=0)
                later = (i > last)[:, None]
                inblk = ((i >= beta * 16) & (i <= last))[:, None]
                fl = tl.where(later, tl.exp(tl.where(later, G_s - ref[None, :], 0.0)), 0.0)
                fr = tl.where(inblk, tl.exp(tl.where(inblk, ref[None, :] - G_s, 0.0)), 0.0)
                rkk = k_s * fr
                dqP += fl * tl.dot(dP, rkk, input_precision=PREC)
                deM += fl * tl.dot(dM, rkk, input_precision=PREC)
                dkP += fr * tl.dot(tl.trans(dP), q_s * fl, input_precision=PREC)
                dkM += fr * tl.dot(tl.trans(dM), e_s * fl, input_precision=PREC)
            # diagonal sub-blocks, exact pairwise decay
            G3 = tl.reshape(G_s, (NB, 16, BKS))
            k3 = tl.reshape(k_s, (NB, 16, BKS))
            q3 = tl.reshape(q_s, (NB, 16, BKS))
            e3 = tl.reshape(e_s, (NB, 16, BKS))
            dq3 = tl.zeros((NB, 16, BKS), dtype=tl.float32)
            de3 = tl.zeros((NB, 16, BKS), dtype=tl.float32)
            dkp3 = tl.zeros((NB, 16, BKS), dtype=tl.float32)
            dkm3 = tl.zeros((NB, 16, BKS), dtype=tl.float32)
            for jc in tl.static_range(16):
                sel = (li == jc)[None, :, None]
                Gs = tl.sum(tl.where(sel, G3, 0.0), axis=1)  # [NB, BKS]: row s = jc of every block
                ks = tl.sum(tl.where(sel, k3, 0.0), axis=1)
                ok = (li >= jc)[None, :, None]
                E = tl.exp(tl.where(ok, G3 - Gs[:, None, :], float("-inf")))  # [NB, r, BKS]
                csel = (li == jc)[None, None, :]
                dPc = tl.sum(tl.where(csel, dP3, 0.0), axis=2)  # [NB, r]: dP[r, s]
                dMc = tl.sum(tl.where(csel, dM3, 0.0), axis=2)
                KE = ks[:, None, :] * E
                dq3 += dPc[:, :, None] * KE
                de3 += dMc[:, :, None] * KE
                dkp3 += tl.where(sel, tl.sum(dPc[:, :, None] * q3 * E, axis=1)[:, None, :], 0.0)
                dkm3 += tl.where(sel, tl.sum(dMc[:, :, None] * e3 * E, axis=1)[:, None, :], 0.0)
            dqP += tl.reshape(dq3, (C, BKS))
            deM += tl.reshape(de3, (C, BKS))
            dkP += tl.reshape(dkp3, (C, BKS))
            dkM += tl.reshape(dkm3, (C, BKS))
            dq_s = gam * dGq + dqP
            de_s = gam * dGe + deM
            dk_s = dkP + dkM + kdec * dKt
            dG = gq * dGq + ge * dGe + q_s * dqP - k_s * dkP + e_s * deM - k_s * dkM - kt * dKt
            dG += tl.where((i == C - 1)[:, None], (tl.sum(kt * dKt, axis=0) + tl.exp(gl) * dgl)[None, :], 0.0)
            dk_s += b_s * de_s
            dlogit = tl.where(rmask[:, None], k_s * de_s * b_s * (1.0 - b_s), 0.0)
            dg_s = tl.sum(dG, axis=0)[None, :] - tl.cumsum(dG, axis=0) + dG
            st = rmask[:, None] & cm[None, :]
            base = ((tok[:, None].to(tl.int64) * H + hh) * NPROG_V + pv) * K + rk[None, :]
            tl.store(dq + base, dq_s, mask=st)
            tl.store(dk + base, dk_s, mask=st)
            tl.store(dg + base, dg_s, mask=st)
            tl.store(da + base, dlogit, mask=st)
            if HAS_CONTENT:
                dc_s = tl.sum(dlogit, axis=0)
                tl.store(dcbuf + cidx.to(tl.int64) * K + rk, dc_s, mask=cm)
                up = tl.load(uu + hh * K * R + rk[:, None] * R + rr[None, :],
                             mask=cm[:, None] & (rr[None, :] < R), other=0.0).to(tl.float32)
                dlow += tl.sum(up * dc_s[:, None], axis=0)
        # ---- content gradient into m_prev of this chunk
        vf = tl.arange(0, BVF)
        vfm = vf < V
        dmp_full = tl.load(dmbuf + (cidx + H) * V + vf, mask=vfm, other=0.0)
        if HAS_CONTENT:
            tl.store(dlowbuf + cidx * R + rr, dlow, mask=rr < R)
            if FULL_CONTENT_GRAD:
                dm_in = tl.sum(udt * dlow[:, None], axis=0)
            else:
                dm_in = tl.zeros((BVF,), dtype=tl.float32)
        else:
            dm_in = tl.zeros((BVF,), dtype=tl.float32)
        if not complete:
            dm_in += dmp_full
        tl.store(dmbuf + cidx * V + vf, dm_in, mask=vfm & (vf >= v_lo) & (vf < v_hi))
        if j == 0:
            if complete:
                tl.store(dos0 + nh * V + vf, dmp_full / C, mask=vfm & (vf >= v_lo) & (vf < v_hi))
        tl.debug_barrier()
