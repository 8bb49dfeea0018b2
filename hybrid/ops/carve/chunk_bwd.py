"""Backward launches of the CARVE chunk kernels: the dS-free pre-pass and the sequential sweep.

``carve_chunk_bprep_kernel`` (parallel over tiles): the parts of the backward that need no
loop-carried gradient (W1, dR0, a2 below), so that the sequential sweep does only what must be
sequential.

``carve_chunk_bwd_kernel`` (sequential, reverse, grid [N * NV, H]): carries the state gradient dS and
the gradient of the chunk mean dm from the last tile to the first. It works on transposed tiles: dS is
held as dS^T [V, K], the token-side tiles as [K, C] and [V, C], so every big product has 128 rows (K
or V) instead of the tile's 32, which lets Hopper run it as a warpgroup MMA reading its second operand
from shared memory. Per tile:

  dR^T  = dS^T W1^T + dR0^T + corr a2^T       [V, C]
  dge^T = -S0 dR^T                             [K, C]
  dM^T  = -U dR^T  (strict)                    [C, C]
  deM^T = sum over levels f^T * ((k f)^T (lm * dM)^T)   [K, C]
  dS^T  <- exp(G_C) dS^T + dO'^T (s exp(G) q) - dR^T (exp(G) b k)   [V, K]

dv and dw (or dR itself for a scalar write gate, see chunk_grads), dM, de and da are written per tile;
the M part of de is needed at once, since it feeds the content gradient of the previous chunk. dS is
saved per tile for the post-pass, which forms dkt = U dS^T and the tile-decay gradient in parallel.
Buffers keep the forward's row-major layouts; only the tiles in registers are transposed.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .tiles import (
    chunk_rows,
    content_chunk_grad,
    content_tiles,
    dec_dot,
    dec_scale,
    erase_grads,
    final_mean_grads,
    level_factor,
    level_mask,
    load_decay,
    load_tile,
    par_tile,
    qk_scales,
    sweep_program,
    to_operand,
)


@triton.jit
def carve_chunk_bprep_kernel(
    k, do, Gb, Pb, abuf, w1b, dr0b, a2b,
    seq_start, seq_len, chunk_off, pos0, cseq, cj,
    scale, H,
    K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_INIT: tl.constexpr, LOWP: tl.constexpr, PREC: tl.constexpr,
):
    """The parts of the backward that need no loop-carried gradient, in parallel over (tile, head).

    With dO' = dO + 1 corr^T (corr: the content-chunk correction, known only in the sweep) the sweep's
    dR = A^T (s P^T dO' + kt dS) = dR0 + a2 corr^T + W1 dS, where W1 = A^T kt, dR0 = s A^T P^T dO and
    a2 = s A^T P^T 1 (over the tile's valid rows). Writes W1 (operand dtype), dR0 and a2 (fp32)."""
    j, bos, L, off, p, t, rmask, tok = par_tile(cseq, cj, seq_start, seq_len, chunk_off, pos0, HAS_INIT, C)
    hh = tl.program_id(1)
    rk = tl.arange(0, BK)
    km = rk < K
    cv = tl.arange(0, BV)
    vm = cv < V
    i = tl.arange(0, C)
    cidx = ((off + j) * H + hh).to(tl.int64)
    k_t = load_tile(k + hh * K, tok, rmask, rk, km, H * K)
    G, gl = load_decay(Gb, tok, rmask, t, L, rk, km, hh, H, K)
    kt = to_operand(k_t * tl.exp(gl[None, :] - G), do, LOWP)
    A = tl.load(abuf + cidx * C * C + i[:, None] * C + i[None, :]).to(tl.float32)
    Ad = to_operand(A, do, LOWP)
    P = tl.load(Pb + cidx * C * C + i[:, None] * C + i[None, :]).to(tl.float32)
    dOd = to_operand(load_tile(do + hh * V, tok, rmask, cv, vm, H * V), do, LOWP)
    trow = tok[:, None].to(tl.int64) * H + hh
    W1 = tl.dot(tl.trans(Ad), kt, input_precision=PREC)
    tl.store(w1b + trow * K + rk[None, :], W1.to(w1b.dtype.element_ty), mask=rmask[:, None] & km[None, :])
    dU0 = scale * tl.dot(tl.trans(to_operand(P, do, LOWP)), dOd, input_precision=PREC)
    dR0 = tl.dot(tl.trans(Ad), to_operand(dU0, do, LOWP), input_precision=PREC)
    tl.store(dr0b + trow * V + cv[None, :], dR0, mask=rmask[:, None] & vm[None, :])
    pcol = scale * tl.sum(tl.where(rmask[:, None], P, 0.0), axis=0)  # s P^T 1 over the valid rows
    a2 = tl.sum(A * pcol[:, None], axis=0)
    tl.store(a2b + tok.to(tl.int64) * H + hh, a2, mask=rmask)


@triton.jit
def carve_chunk_bwd_kernel(
    q, k, v, gbuf, w, ud, uu, do, Gb, ubuf, w1b, dr0b, a2b, qks,
    pos0, hbuf,
    dht, dmf, dosf,
    corrb, deb, dsb, da, dv, dw, dMb, dcb, dlowb, dS0, dm0, dos0, xbuf, xflag,
    seq_start, seq_len, chunk_off,
    scale, H, de_part, dm_part, dc_part,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, FULL_CONTENT_GRAD: tl.constexpr, VEC_W: tl.constexpr,
    HAS_DHT: tl.constexpr, HAS_DMF: tl.constexpr, HAS_DOSF: tl.constexpr,
    LOWP: tl.constexpr, PREC: tl.constexpr, DEC: tl.constexpr, SUB: tl.constexpr,
    NV: tl.constexpr,
):
    """The backward sweep of one (sequence, head), or of its value slice vb with the V split: walks the
    tiles in reverse with dS^T and dm in registers (see the module docstring for the products per tile);
    writes dv/dw (or dR), dM, de, da, dc, U_up^T dc, corr, dS per tile and the initial-state gradients."""
    hh, nh, bos, L, off, p, NS, i, rk, km, cv, vm, vb = sweep_program(seq_start, seq_len, chunk_off, pos0, H,
                                                                      HAS_INIT, K, V, C, BK, BV, NV)
    # the V split (NV > 1): this program's parts of de, dM and dc go to its own slice of those buffers
    deb += vb.to(tl.int64) * de_part
    dMb += vb.to(tl.int64) * dm_part
    dcb += vb.to(tl.int64) * dc_part
    smask_t = vm[:, None] & km[None, :]  # [BV, BK]
    KV = K * V
    st_t = rk[None, :] * V + cv[:, None]  # offsets of S[k, v] at (v, k)
    if HAS_DHT:
        dS = tl.load(dht + nh * KV + st_t, mask=smask_t, other=0.0)  # dS^T
    else:
        dS = tl.zeros((BV, BK), dtype=tl.float32)
    dmn, dosv = final_mean_grads(dmf, dosf, nh, cv, vm, V, BV, HAS_DMF, HAS_DOSF)
    dos0v = dosv
    dcc = tl.zeros((BK,), dtype=tl.float32)  # content gradient of the current content chunk, gathered
    rr, udt, upt = content_tiles(ud, uu, rk, km, cv, vm, hh, K, V, R, BR, HAS_CONTENT)  # held through the loop
    upper = i[:, None] < i[None, :]  # (s, r) with s < r: the strict lower triangle of dM, transposed
    for jj in range(0, NS):
        j = NS - 1 - jj
        t, rmask, tok = chunk_rows(j, p, L, bos, C)
        cidx = ((off + j) * H + hh).to(tl.int64)
        complete = ((j // SUB) + 1) * (C * SUB) <= p + L  # this tile's content chunk is complete
        tl.store(dsb + cidx * KV + st_t, dS.to(dsb.dtype.element_ty), mask=smask_t)  # for the post-pass
        # K-side tiles [BK, C]
        b = load_tile(gbuf + hh * K, tok, rmask, rk, km, H * K, True)  # the erase gate, saved by the forward
        k_t = load_tile(k + hh * K, tok, rmask, rk, km, H * K, True)
        G, gl = load_decay(Gb, tok, rmask, t, L, rk, km, hh, H, K, True)
        gam = tl.exp(G)
        ge = to_operand(gam * b * k_t, q, LOWP)
        gq = to_operand((scale * gam) * load_tile(q + hh * K, tok, rmask, rk, km, H * K, True), q, LOWP)  # s exp(G) q
        egl = tl.exp(gl)
        # V-side tiles [BV, C]
        vmask = vm[:, None] & rmask[None, :]
        tcol = tok[None, :].to(tl.int64) * H + hh
        if VEC_W:
            v_t = load_tile(v + hh * V, tok, rmask, cv, vm, H * V, True)
            w_t = load_tile(w + hh * V, tok, rmask, cv, vm, H * V, True)
        corr = tl.where(complete, dmn / (C * SUB), dosv)
        tl.store(corrb + cidx * V + cv, corr, mask=vm)  # the post-pass forms dP and dq with it
        dO = load_tile(do + hh * V, tok, rmask, cv, vm, H * V, True)
        dOd = to_operand(tl.where(vmask, dO + corr[:, None], 0.0), q, LOWP)
        dSd = to_operand(dS, q, LOWP)
        W1 = to_operand(load_tile(w1b + hh * K, tok, rmask, rk, km, H * K, True), q, LOWP)  # W1^T [BK, C]
        a2 = tl.load(a2b + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0)
        dR = tl.dot(dSd, W1, acc=load_tile(dr0b + hh * V, tok, rmask, cv, vm, H * V, True) + corr[:, None] * a2[None, :],
                    input_precision=PREC)  # dR^T [BV, C]
        if VEC_W:
            tl.store(dv + tcol * V + cv[:, None], (w_t * dR).to(dv.dtype.element_ty), mask=vmask)
            tl.store(dw + tcol * V + cv[:, None], (v_t * dR).to(dw.dtype.element_ty), mask=vmask)
        else:
            # dR itself (fp32, into dv): the caller forms dv = w dR and dw = sum_v v dR, since the row
            # sum over V would cross the warps of this layout
            tl.store(dv + tcol * V + cv[:, None], dR, mask=vmask)
        dRd = to_operand(dR, q, LOWP)
        Ud = to_operand(tl.load(ubuf + tok[:, None].to(tl.int64) * (H * V) + hh * V + cv[None, :],
                           mask=rmask[:, None] & vm[None, :], other=0.0), q, LOWP)  # U [C, BV]
        dM = tl.where(upper, -tl.dot(Ud, dRd, input_precision=PREC), 0.0)  # dM^T [C, C]
        tl.store(dMb + cidx * C * C + i[None, :] * C + i[:, None], dM)
        S0d = to_operand(tl.load(hbuf + cidx * KV + rk[:, None] * V + cv[None, :], mask=km[:, None] & vm[None, :],
                            other=0.0).to(tl.float32), q, LOWP)  # S0 [BK, BV]
        dge = -tl.dot(S0d, dRd, input_precision=PREC)  # dge^T [BK, C]
        dS = tl.dot(dOd, tl.trans(gq), acc=egl[None, :] * dS, input_precision=PREC)
        dS = tl.dot(-dRd, tl.trans(ge), acc=dS, input_precision=PREC)
        # de^T = exp(G) dge^T + the M part (decayed product of dM with k, over the dyadic levels)
        _, _, ik, sk = qk_scales(qks, cidx, DEC)
        idd, sd = dec_scale(dM, DEC)
        dMs = dM * idd
        deM = tl.zeros((BK, C), dtype=tl.float32)
        for lv in tl.range(0, LOG2C, loop_unroll_factor=1):
            h = C // (2 << lv)
            f = level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, h, True)
            deM += f * dec_dot(k_t * (f * ik), tl.where(level_mask(h, C, True), dMs, 0.0), PREC, DEC)
        dcc = erase_grads(gam * dge + deM * (sd * sk), k_t, b, rmask, deb, da, tcol * K + rk[:, None],
                           km[:, None] & rmask[None, :], dcc, HAS_CONTENT, NV == 1)
        dos0v = tl.where(j == 0, corr, dos0v)
        if (j % SUB) == 0:  # the first tile of a content chunk, the last one visited (content_chunk_grad)
            dcc, dmn = content_chunk_grad(dcc, dmn, complete, udt, upt, dcb, dlowb, cidx, rk, km, rr, K, R, BK,
                                           HAS_CONTENT, FULL_CONTENT_GRAD, xbuf, xflag, vb, NV, BR)
    tl.store(dS0 + nh * KV + st_t, dS, mask=smask_t)
    tl.store(dm0 + nh * V + cv, dmn, mask=vm)
    tl.store(dos0 + nh * V + cv, dos0v, mask=vm)
