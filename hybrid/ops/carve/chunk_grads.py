"""Backward launches of the CARVE chunk kernels that run after the sequential sweep.

- ``carve_chunk_post_kernel``: dq, dk, dg (and da with the V split), in parallel over tiles.
- ``carve_chunk_dvw_kernel``: dv = w dR and dw = sum_v v dR for a scalar write gate (the transposed
  sweep writes dR: its layout spreads V over the warps, so the row sum over V is cheaper here).
- ``carve_chunk_du_kernel``: the gradients of the content maps, summed over every content chunk c of
  every sequence: dU_up = sum_c dc_c (U_down m_c)^T and dU_down = sum_c (U_up^T dc_c) m_c^T, from the
  per-chunk dc and U_up^T dc the sweep saved (zero on the other tiles) and the forward's m. Programs
  (head, which, part) each sum a fixed range of slots in order; ``carve_chunk_du_sum_kernel`` adds the
  parts in order: deterministic, no atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .tiles import (
    dec_dot,
    dec_scale,
    level_factor,
    level_mask,
    load_decay,
    load_tile,
    par_tile,
    qk_scales,
    to_operand,
)


@triton.jit
def carve_chunk_post_kernel(
    q, k, gbuf, do, Gb, ubuf, hbuf, corrb, dMb, deb, dsb, qks, dq, dk, dg, da,
    seq_start, seq_len, chunk_off, pos0, cseq, cj,
    scale, H, de_part, dm_part,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr, BKP: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, LOWP: tl.constexpr, PREC: tl.constexpr,
    DEC: tl.constexpr, NV: tl.constexpr,
):
    """The gradients that need no loop-carried value once the backward sweep has run, in parallel over
    (tile, head, key-column block): dP and the state part of dq, dkt = U dS^T (from the state gradient
    dS the sweep saved at each tile's end), the decayed-product gradients of P (q and k sides) and of M
    (k side) in one pass over the dyadic levels, then dg = reverse cumulative sum of dG inside the tile.
    Writes dq, dk, dg in the input dtype. Key columns are independent here, so K = 128 runs as two
    programs of BKP = 64 columns, each with half the registers.

    With the V split (NV > 1) the sweep saved NV parts of de and dM (de_part and dm_part elements
    apart): they are added here, and da = k de b (1 - b) is formed here instead of in the sweep."""
    j, bos, L, off, p, t, rmask, tok = par_tile(cseq, cj, seq_start, seq_len, chunk_off, pos0, HAS_INIT, C)
    hh = tl.program_id(1)
    rk = tl.program_id(2) * BKP + tl.arange(0, BKP)  # key columns are independent here: split over programs
    km = rk < K
    i = tl.arange(0, C)
    cidx = ((off + j) * H + hh).to(tl.int64)
    cv = tl.arange(0, BV)
    vm = cv < V
    b = load_tile(gbuf + hh * K, tok, rmask, rk, km, H * K)  # the erase gate, saved by the forward
    k_t = load_tile(k + hh * K, tok, rmask, rk, km, H * K)
    q_t = load_tile(q + hh * K, tok, rmask, rk, km, H * K)
    G, gl = load_decay(Gb, tok, rmask, t, L, rk, km, hh, H, K)
    e = b * k_t
    # dP = s dO' U^T and dq's state part s dO' S0^T, with dO' = dO + corr (the sweep's content correction)
    vmask = rmask[:, None] & vm[None, :]
    trow = tok[:, None].to(tl.int64) * H + hh
    corr = tl.load(corrb + cidx * V + cv, mask=vm, other=0.0)
    dOd = to_operand(tl.where(vmask, load_tile(do + hh * V, tok, rmask, cv, vm, H * V) + corr[None, :], 0.0), q, LOWP)
    Ud = to_operand(tl.load(ubuf + trow * V + cv[None, :], mask=vmask, other=0.0), q, LOWP)
    dP = tl.where(i[:, None] >= i[None, :], scale * tl.dot(dOd, tl.trans(Ud), input_precision=PREC), 0.0)
    S0r = tl.load(hbuf + cidx * K * V + rk[:, None] * V + cv[None, :], mask=km[:, None] & vm[None, :], other=0.0)
    S0d = to_operand(S0r.to(tl.float32), q, LOWP)
    X = tl.exp(G) * (scale * tl.dot(dOd, tl.trans(S0d), input_precision=PREC))
    tmask = rmask[:, None] & km[None, :]
    tb = (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :]
    # the state gradient dS at this tile's end (saved by the sweep): dkt = U dS^T, Y = exp(G_C - G) dkt
    dSr = tl.load(dsb + cidx * K * V + rk[:, None] * V + cv[None, :], mask=km[:, None] & vm[None, :], other=0.0)
    Y = tl.exp(gl[None, :] - G) * tl.dot(Ud, tl.trans(to_operand(dSr.to(tl.float32), q, LOWP)), input_precision=PREC)
    # gradient of the tile's decay exp(G_C): through exp(G_C) S0 and through k exp(G_C - G)
    dglv = tl.exp(gl) * tl.sum(S0r.to(tl.float32) * dSr.to(tl.float32), axis=1) + tl.sum(k_t * Y, axis=0)
    dM = tl.load(dMb + cidx * C * C + i[:, None] * C + i[None, :])
    for hv in tl.static_range(1, NV):
        dM += tl.load(dMb + hv * dm_part + cidx * C * C + i[:, None] * C + i[None, :])
    dd = tl.sum(tl.where(i[:, None] == i[None, :], dP, 0.0), axis=1)  # P's diagonal (no decay)
    # the decayed-product gradients of P (q side and k side) and of M (k side) in one pass over the
    # dyadic levels, sharing each level's factor (as the sweep does for de); operands scaled by dec_scale
    idP, sdP = dec_scale(dP, DEC)
    idM, sdM = dec_scale(dM, DEC)
    iq, sq, ik, sk = qk_scales(qks, cidx, DEC)
    ie, se = ik, sk  # |e| = b |k| <= |k|
    dP = dP * idP
    dM = dM * idM
    cqk = sdP * sq  # scale of the dP^T (q f) part of dkK, and below of the dM^T (e f) part
    cme = sdM * se
    dqP = tl.zeros((C, BKP), dtype=tl.float32)
    dkK = tl.zeros((C, BKP), dtype=tl.float32)
    for lv in tl.range(0, LOG2C, loop_unroll_factor=1):
        h = C // (2 << lv)
        f = level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, h)
        lm = level_mask(h, C)
        dPh = tl.where(lm, dP, 0.0)
        dMh = tl.where(lm, dM, 0.0)
        dqP += f * dec_dot(dPh, k_t * (f * ik), PREC, DEC)
        dkK += f * (cqk * dec_dot(tl.trans(dPh), q_t * (f * iq), PREC, DEC)
                    + cme * dec_dot(tl.trans(dMh), e * (f * ie), PREC, DEC))
    dqP = dqP * (sdP * sk)
    dqP += dd[:, None] * k_t
    dkK += dd[:, None] * q_t
    Z = tl.load(deb + tb, mask=tmask, other=0.0).to(tl.float32)
    if NV > 1:
        for hv in tl.static_range(1, NV):
            Z += tl.load(deb + hv * de_part + tb, mask=tmask, other=0.0).to(tl.float32)
        tl.store(da + tb, (k_t * Z * b * (1.0 - b)).to(da.dtype.element_ty), mask=tmask)
    # dG = q X - k Y + e de (the exp(G) e and M-row parts together) + decayed-product parts; the
    # exp(G_C) term sits on the grid's last row (C - 1): the reverse cumsum carries it to every valid row
    dG = q_t * (X + dqP) - k_t * (Y + dkK) + e * Z
    dG += tl.where((i == C - 1)[:, None], dglv[None, :], 0.0)
    dgv = tl.sum(dG, axis=0)[None, :] - tl.cumsum(dG, axis=0) + dG
    tl.store(dq + tb, (X + dqP).to(dq.dtype.element_ty), mask=tmask)
    tl.store(dk + tb, (Y + b * Z + dkK).to(dk.dtype.element_ty), mask=tmask)
    tl.store(dg + tb, dgv.to(dg.dtype.element_ty), mask=tmask)


@triton.jit
def carve_chunk_dvw_kernel(dR, v, w, dv, dw, rows, V: tl.constexpr, BV: tl.constexpr, BLOCK: tl.constexpr):
    """dv = w dR and dw = sum_v v dR over rows (token, head) of [rows, V] buffers."""
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rm = r < rows
    cv = tl.arange(0, BV)
    m = rm[:, None] & (cv < V)[None, :]
    off = r[:, None].to(tl.int64) * V + cv[None, :]
    d = tl.load(dR + off, mask=m, other=0.0).to(tl.float32)
    w_r = tl.load(w + r, mask=rm, other=0.0).to(tl.float32)
    tl.store(dv + off, (w_r[:, None] * d).to(dv.dtype.element_ty), mask=m)
    vv = tl.load(v + off, mask=m, other=0.0).to(tl.float32)
    tl.store(dw + r, tl.sum(vv * d, axis=1).to(dw.dtype.element_ty), mask=rm)


@triton.jit
def carve_chunk_du_kernel(ud, mbuf, dcb, dlowb, duu, dud, n_slots, H, nv_stride, rows_per_program,
                       K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                       BR: tl.constexpr, NV: tl.constexpr, BC: tl.constexpr, PREC: tl.constexpr):
    """Program (h, 0, s) writes part s of dU_up[h] [K, R], program (h, 1, s) part s of dU_down[h] [R, V]
    (fp32; part s sums the slots [s rows_per_program, (s + 1) rows_per_program), the caller adds the parts).

    ud: U_down [H, R, V]; mbuf: m per slot [n_slots, H, V]; dcb: NV parts of dc [NV, n_slots, H, K]
    (nv_stride elements apart, added here); dlowb: U_up^T dc [n_slots, H, R]. BR >= 16 (the products);
    PREC: tf32x3 on the GPU (fp32 accuracy on the tensor cores), ieee in the interpreter."""
    hh = tl.program_id(0)
    which = tl.program_id(1)
    part = tl.program_id(2)
    rr = tl.arange(0, BR)
    rm = rr < R
    cv = tl.arange(0, BV)
    vm = cv < V
    rk = tl.arange(0, BK)
    km = rk < K
    cc = tl.arange(0, BC)
    lo = part * rows_per_program
    hi = tl.minimum(lo + rows_per_program, n_slots)
    if which == 0:
        udt = tl.load(ud + hh * R * V + rr[:, None] * V + cv[None, :], mask=rm[:, None] & vm[None, :], other=0.0)
        acc_up = tl.zeros((BK, BR), dtype=tl.float32)
        for c0 in range(lo, hi, BC):
            c = c0 + cc
            cm = c < hi
            row = c[:, None].to(tl.int64) * H + hh
            m = tl.load(mbuf + row * V + cv[None, :], mask=cm[:, None] & vm[None, :], other=0.0)
            low = tl.dot(m, tl.trans(udt.to(tl.float32)), input_precision=PREC)  # [BC, BR]
            dc = tl.load(dcb + row * K + rk[None, :], mask=cm[:, None] & km[None, :], other=0.0)
            for hv in tl.static_range(1, NV):
                dc += tl.load(dcb + hv * nv_stride + row * K + rk[None, :], mask=cm[:, None] & km[None, :],
                              other=0.0)
            acc_up += tl.dot(tl.trans(dc), low, input_precision=PREC)
        tl.store(duu + (part * H + hh) * K * R + rk[:, None] * R + rr[None, :], acc_up,
                 mask=km[:, None] & rm[None, :])
    else:
        acc_down = tl.zeros((BR, BV), dtype=tl.float32)
        for c0 in range(lo, hi, BC):
            c = c0 + cc
            cm = c < hi
            row = c[:, None].to(tl.int64) * H + hh
            m = tl.load(mbuf + row * V + cv[None, :], mask=cm[:, None] & vm[None, :], other=0.0)
            dlow = tl.load(dlowb + row * R + rr[None, :], mask=cm[:, None] & rm[None, :], other=0.0)
            acc_down += tl.dot(tl.trans(dlow), m, input_precision=PREC)
        tl.store(dud + (part * H + hh) * R * V + rr[:, None] * V + cv[None, :], acc_down,
                 mask=rm[:, None] & vm[None, :])


@triton.jit
def carve_chunk_du_sum_kernel(parts_up, parts_down, duu, dud, n_parts, H, N_UP: tl.constexpr, N_DOWN: tl.constexpr,
                           BLOCK: tl.constexpr):
    """Adds carve_chunk_du_kernel's partial sums in order (deterministic) and writes dU_up [H, K, R] and
    dU_down [H, R, V] in their own dtypes. Program (h, 0) the first, (h, 1) the second; N_UP = K R and
    N_DOWN = R V elements per head."""
    hh = tl.program_id(0)
    if tl.program_id(1) == 0:
        for e0 in tl.static_range(0, N_UP, BLOCK):
            e = e0 + tl.arange(0, BLOCK)
            em = e < N_UP
            acc = tl.zeros((BLOCK,), dtype=tl.float32)
            for p in range(0, n_parts):
                acc += tl.load(parts_up + (p * H + hh) * N_UP + e, mask=em, other=0.0)
            tl.store(duu + hh * N_UP + e, acc.to(duu.dtype.element_ty), mask=em)
    else:
        for e0 in tl.static_range(0, N_DOWN, BLOCK):
            e = e0 + tl.arange(0, BLOCK)
            em = e < N_DOWN
            acc = tl.zeros((BLOCK,), dtype=tl.float32)
            for p in range(0, n_parts):
                acc += tl.load(parts_down + (p * H + hh) * N_DOWN + e, mask=em, other=0.0)
            tl.store(dud + hh * N_DOWN + e, acc.to(dud.dtype.element_ty), mask=em)
