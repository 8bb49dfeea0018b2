"""The v2 forward sweep with the state products on transposed tiles (HYBRID_CARVE_V2_FWD=t; see
docs/kernels.md, "v2").

Same function and buffers as ``carve_v2_fwd_kernel``. The couplings M, their inverse A and the
key-side operands stay [C, K] tiles (the dyadic level products need them so), but the state is held
as S^T [V, K] and the value-side tiles as [V, C]. The four state/value products then have 128 rows
(V) instead of the tile's 32, so that Hopper runs them as warpgroup MMAs with the [C, K] and [C, C]
operands read from shared memory:

  rhs^T = z^T - S^T (exp(G) b k)^T           [V, C]
  U^T   = rhs^T A^T                          [V, C]
  O^T   = s (S^T (exp(G) q)^T + U^T P^T)     [V, C]
  S^T  <- exp(G_C) S^T + U^T (k exp(G_C - G))   [V, K]
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_v2_bwdt import _tile_t
from .triton_v2_kernels import (_cast, _chunk_rows, _content, _dec_fwd, _gates, _inverse, _load_G, _qk_scales, _seq,
                                _tile, _up_tile)


@triton.jit
def carve_v2_fwdt_kernel(
    q, k, v, a, w, ud, uu, o, ubuf, Gb, Pb, qks,
    h0, m0, os0, pos0,
    hbuf, mbuf, abuf, gbuf, osf, sf,
    seq_start, seq_len, chunk_off,
    scale, H,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, VEC_W: tl.constexpr,
    LOWP: tl.constexpr, PREC: tl.constexpr, PREC_INV: tl.constexpr, DEC: tl.constexpr, SUB: tl.constexpr,
    GATHER: tl.constexpr, UNR: tl.constexpr,
):
    n = tl.program_id(0)
    hh = tl.program_id(1)
    nh = (n * H + hh).to(tl.int64)
    bos, L, off, p = _seq(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT)
    NS = (p + L + C - 1) // C
    i = tl.arange(0, C)
    rk = tl.arange(0, BK)
    km = rk < K
    cv = tl.arange(0, BV)
    vm = cv < V
    smask_t = vm[:, None] & km[None, :]  # [BV, BK]
    KV = K * V
    st_t = rk[None, :] * V + cv[:, None]  # offsets of S[k, v] at (v, k)
    if HAS_INIT:
        S = tl.load(h0 + nh * KV + st_t, mask=smask_t, other=0.0)  # S^T
        m = tl.load(m0 + nh * V + cv, mask=vm, other=0.0)
        osum0 = tl.load(os0 + nh * V + cv, mask=vm, other=0.0)
    else:
        S = tl.zeros((BV, BK), dtype=tl.float32)
        m = tl.zeros((BV,), dtype=tl.float32)
        osum0 = tl.zeros((BV,), dtype=tl.float32)
    osum = osum0
    if HAS_CONTENT:
        rr = tl.arange(0, BR)
        udt = tl.load(ud + hh * R * V + rr[:, None] * V + cv[None, :], mask=(rr[:, None] < R) & vm[None, :],
                      other=0.0).to(tl.float32)
        upt = _up_tile(uu, rk, km, hh, K, R, BR)
    else:
        udt = 0.0
        upt = 0.0
    c = _content(udt, upt, m, HAS_CONTENT)[1]  # content term of the current content chunk
    for j in range(0, NS):
        t, rmask, tok = _chunk_rows(j, p, L, bos, C)
        cidx = ((off + j) * H + hh).to(tl.int64)
        tl.store(hbuf + cidx * KV + st_t, S.to(hbuf.dtype.element_ty), mask=smask_t)
        tl.store(mbuf + cidx * V + cv, m, mask=vm)
        # content-dependent couplings and their inverse ([C, K] and [C, C] tiles, as in carve_v2_fwd_kernel)
        b = _gates(a, c, tok, rmask, rk, km, hh, H, K, HAS_CONTENT)
        tl.store(gbuf + (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :], b,
                 mask=rmask[:, None] & km[None, :])  # the erase gate, for the backward kernels
        k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
        G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
        e = b * k_t
        _, _, ik, sk = _qk_scales(qks, cidx, DEC)
        M = _dec_fwd(e, k_t, ik, sk, ik, sk, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, LOG2C, True, PREC, DEC,
                     GATHER, UNR)
        A = _inverse(M, C, NB, PREC_INV)
        tl.store(abuf + cidx * C * C + i[:, None] * C + i[None, :], A.to(abuf.dtype.element_ty))
        gam = tl.exp(G)
        ge = _cast(gam * e, q, LOWP)
        kt = _cast(k_t * tl.exp(gl[None, :] - G), q, LOWP)  # k exp(G_C - G)
        gq = _cast(gam * _tile(q + hh * K, tok, rmask, rk, km, H * K), q, LOWP)
        egl = tl.exp(gl)
        # value-side tiles [BV, C]
        vmask = vm[:, None] & rmask[None, :]
        tcol = tok[None, :].to(tl.int64) * H + hh
        v_t = _tile_t(v + hh * V, tok, rmask, cv, vm, H * V)
        if VEC_W:
            z = _tile_t(w + hh * V, tok, rmask, cv, vm, H * V) * v_t
        else:
            z = tl.load(w + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0).to(tl.float32)[None, :] * v_t
        Sd = _cast(S, q, LOWP)
        rhs = tl.dot(Sd, -tl.trans(ge), acc=z, input_precision=PREC)  # rhs^T
        U = tl.dot(_cast(rhs, q, LOWP), tl.trans(_cast(A, q, LOWP)), input_precision=PREC)  # U^T
        Ud = _cast(U, q, LOWP)
        tl.store(ubuf + tcol * V + cv[:, None], Ud.to(ubuf.dtype.element_ty), mask=vmask)
        P = _cast(tl.load(Pb + cidx * C * C + i[:, None] * C + i[None, :]).to(tl.float32), q, LOWP)
        O = scale * tl.dot(Ud, tl.trans(P), acc=tl.dot(Sd, tl.trans(gq), input_precision=PREC), input_precision=PREC)
        tl.store(o + tcol * V + cv[:, None], O.to(o.dtype.element_ty), mask=vmask)
        osum = osum + tl.sum(tl.where(rmask[None, :], O, 0.0), axis=1)
        complete = (((j + 1) % SUB) == 0) & ((j + 1) * C <= p + L)
        m = tl.where(complete, osum / (C * SUB), m)
        osum = tl.where(complete, 0.0, osum)
        if HAS_CONTENT:
            if complete:  # the next content chunk's term, once per chunk
                c = _content(udt, upt, m, HAS_CONTENT)[1]
        S = tl.dot(Ud, kt, acc=egl[None, :] * S, input_precision=PREC)
    fidx = ((off + NS) * H + hh).to(tl.int64)
    tl.store(sf + nh * KV + st_t, S, mask=smask_t)
    tl.store(mbuf + fidx * V + cv, m, mask=vm)
    tl.store(osf + nh * V + cv, osum, mask=vm)


__all__ = ["carve_v2_fwdt_kernel", "triton"]
