"""The v2 backward sweep in transposed orientation (HYBRID_CARVE_V2_BWD=t; see docs/kernels.md, "v2").

Same function as ``carve_v2_bwd_kernel`` with ``DS_OUT`` (the post-pass forms dkt and the tile-decay
gradient from the saved dS), computed on transposed tiles: the state gradient is held as dS^T
[V, K], the token-side tiles as [K, C] and [V, C]. Every big product then has 128 rows (K or V)
instead of the tile's 32, which lets Hopper run it as a warpgroup MMA reading its second operand from
shared memory, rather than as an Ampere-style MMA whose [128, 128] operands live in registers:

  dR^T  = dS^T W1^T + dR0^T + corr a2^T       [V, C]
  dge^T = -S0 dR^T                             [K, C]
  dM^T  = -U dR^T  (strict)                    [C, C]   (small, 32 rows)
  deM^T = sum over levels f^T * ((k f)^T (lm * dM)^T)   [K, C]
  dS^T  <- exp(G_C) dS^T + dO'^T (s exp(G) q) - dR^T (exp(G) b k)   [V, K]

Buffers and their layouts are those of ``carve_v2_bwd_kernel``: only the tiles in registers are
transposed, by the pointer arithmetic of the loads and stores.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_v2_kernels import (
    _cast,
    _chunk_rows,
    _content_chunk_grad,
    _content_tiles,
    _ddot,
    _dscale,
    _erase_grads,
    _final_mean_grads,
    _level_factor,
    _level_mask,
    _load_G,
    _qk_scales,
    _sweep,
    _tile,
)


@triton.jit
def carve_v2_bwdt_kernel(
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
    LOWP: tl.constexpr, PREC: tl.constexpr, DEC: tl.constexpr, SUB: tl.constexpr, UNR: tl.constexpr,
    NV: tl.constexpr, HOLD_U: tl.constexpr,
):
    hh, nh, bos, L, off, p, NS, i, rk, km, cv, vm, vb = _sweep(seq_start, seq_len, chunk_off, pos0, H, HAS_INIT, K, V,
                                                                C, BK, BV, NV)
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
    dmn, dosv = _final_mean_grads(dmf, dosf, nh, cv, vm, V, BV, HAS_DMF, HAS_DOSF)
    dos0v = dosv
    dcc = tl.zeros((BK,), dtype=tl.float32)  # content gradient of the current content chunk, gathered
    if HOLD_U:  # U_down, U_up held in registers through the loop (else read once per content chunk)
        rr, udt, upt = _content_tiles(ud, uu, rk, km, cv, vm, hh, K, V, R, BR, HAS_CONTENT)
    upper = i[:, None] < i[None, :]  # (s, r) with s < r: the strict lower triangle of dM, transposed
    for jj in range(0, NS):
        j = NS - 1 - jj
        t, rmask, tok = _chunk_rows(j, p, L, bos, C)
        cidx = ((off + j) * H + hh).to(tl.int64)
        complete = ((j // SUB) + 1) * (C * SUB) <= p + L  # this tile's content chunk is complete
        tl.store(dsb + cidx * KV + st_t, dS.to(dsb.dtype.element_ty), mask=smask_t)  # for the post-pass
        # K-side tiles [BK, C]
        b = _tile(gbuf + hh * K, tok, rmask, rk, km, H * K, True)  # the erase gate, saved by the forward
        k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K, True)
        G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K, True)
        gam = tl.exp(G)
        ge = _cast(gam * b * k_t, q, LOWP)
        gq = _cast((scale * gam) * _tile(q + hh * K, tok, rmask, rk, km, H * K, True), q, LOWP)  # s exp(G) q
        egl = tl.exp(gl)
        # V-side tiles [BV, C]
        vmask = vm[:, None] & rmask[None, :]
        tcol = tok[None, :].to(tl.int64) * H + hh
        if VEC_W:
            v_t = _tile(v + hh * V, tok, rmask, cv, vm, H * V, True)
            w_t = _tile(w + hh * V, tok, rmask, cv, vm, H * V, True)
        corr = tl.where(complete, dmn / (C * SUB), dosv)
        tl.store(corrb + cidx * V + cv, corr, mask=vm)  # the post-pass forms dP and dq with it
        dO = _tile(do + hh * V, tok, rmask, cv, vm, H * V, True)
        dOd = _cast(tl.where(vmask, dO + corr[:, None], 0.0), q, LOWP)
        dSd = _cast(dS, q, LOWP)
        W1 = _cast(_tile(w1b + hh * K, tok, rmask, rk, km, H * K, True), q, LOWP)  # W1^T [BK, C]
        a2 = tl.load(a2b + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0)
        dR = tl.dot(dSd, W1, acc=_tile(dr0b + hh * V, tok, rmask, cv, vm, H * V, True) + corr[:, None] * a2[None, :],
                    input_precision=PREC)  # dR^T [BV, C]
        if VEC_W:
            tl.store(dv + tcol * V + cv[:, None], (w_t * dR).to(dv.dtype.element_ty), mask=vmask)
            tl.store(dw + tcol * V + cv[:, None], (v_t * dR).to(dw.dtype.element_ty), mask=vmask)
        else:
            # dR itself (fp32, into dv): the caller forms dv = w dR and dw = sum_v v dR, since the row
            # sum over V would cross the warps of this layout (about 0.9 ms of the sweep at T = 4096)
            tl.store(dv + tcol * V + cv[:, None], dR, mask=vmask)
        dRd = _cast(dR, q, LOWP)
        Ud = _cast(tl.load(ubuf + tok[:, None].to(tl.int64) * (H * V) + hh * V + cv[None, :],
                           mask=rmask[:, None] & vm[None, :], other=0.0), q, LOWP)  # U [C, BV]
        dM = tl.where(upper, -tl.dot(Ud, dRd, input_precision=PREC), 0.0)  # dM^T [C, C]
        tl.store(dMb + cidx * C * C + i[None, :] * C + i[:, None], dM)
        S0d = _cast(tl.load(hbuf + cidx * KV + rk[:, None] * V + cv[None, :], mask=km[:, None] & vm[None, :],
                            other=0.0).to(tl.float32), q, LOWP)  # S0 [BK, BV]
        dge = -tl.dot(S0d, dRd, input_precision=PREC)  # dge^T [BK, C]
        dS = tl.dot(dOd, tl.trans(gq), acc=egl[None, :] * dS, input_precision=PREC)
        dS = tl.dot(-dRd, tl.trans(ge), acc=dS, input_precision=PREC)
        # de^T = exp(G) dge^T + the M part (decayed product of dM with k, over the dyadic levels)
        _, _, ik, sk = _qk_scales(qks, cidx, DEC)
        idd, sd = _dscale(dM, DEC)
        dMs = dM * idd
        deM = tl.zeros((BK, C), dtype=tl.float32)
        for lv in tl.range(0, LOG2C, loop_unroll_factor=UNR):
            h = C // (2 << lv)
            f = _level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, h, False, True)
            deM += f * _ddot(k_t * (f * ik), tl.where(_level_mask(h, C, True), dMs, 0.0), PREC, DEC)
        dcc = _erase_grads(gam * dge + deM * (sd * sk), k_t, b, rmask, deb, da, tcol * K + rk[:, None],
                           km[:, None] & rmask[None, :], dcc, HAS_CONTENT, True, NV == 1)
        dos0v = tl.where(j == 0, corr, dos0v)
        if (j % SUB) == 0:  # the first tile of a content chunk, the last one visited (_content_chunk_grad)
            if not HOLD_U:
                rr, udt, upt = _content_tiles(ud, uu, rk, km, cv, vm, hh, K, V, R, BR, HAS_CONTENT)
            dcc, dmn = _content_chunk_grad(dcc, dmn, complete, udt, upt, dcb, dlowb, cidx, rk, km, rr, K, R, BK,
                                           HAS_CONTENT, FULL_CONTENT_GRAD, xbuf, xflag, vb, NV, BR)
    tl.store(dS0 + nh * KV + st_t, dS, mask=smask_t)
    tl.store(dm0 + nh * V + cv, dmn, mask=vm)
    tl.store(dos0 + nh * V + cv, dos0v, mask=vm)


__all__ = ["carve_v2_bwdt_kernel", "triton"]
