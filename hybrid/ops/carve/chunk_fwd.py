"""Forward launches of the CARVE chunk kernels (K, V <= 128).

``carve_chunk_prep_kernel`` (parallel, grid [tiles, H]): the in-tile cumulative log-decay G (fp32,
token-indexed), P = decayed q k^T (lower with diagonal, [C, C] per tile) and, with fp16 decayed
products, the tile's largest |q| and |k| (the operand scales). All content-independent, so it runs
over every tile at once instead of inside the sequential sweep.

``carve_chunk_fwd_kernel`` (sequential, grid [N * NV, H]): one program per (sequence, head) -- or per
value slice of it, the V split -- walks its tiles with the [BK, BV] fp32 state in registers (K, V <=
128 keeps it there; wide.py serves larger heads). Per tile: the erase gate b (content term of the
content chunk), M = decayed (b k) k^T (strictly lower), A = (I + M)^-1 (products only),
U = A (w v - (exp(G) e) S0), O = s ((exp(G) q) S0 + P U), the chunk mean m, and
S_next = exp(G_C) S0 + (k exp(G_C - G))^T U. It saves the tile-start states, m, A, U and b for the
backward, so that the backward recomputes none of the sequential work.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .tiles import (
    chunk_content_term,
    chunk_rows,
    content_tiles,
    dec_scale,
    decayed_product,
    erase_gate,
    first_split_only,
    load_decay,
    load_tile,
    par_tile,
    qk_scales,
    sweep_program,
    to_operand,
    unit_lower_inverse,
)


@triton.jit
def carve_chunk_prep_kernel(
    q, k, g, Gb, Pb, qks,
    seq_start, seq_len, chunk_off, pos0, cseq, cj,
    H,
    K: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr, BK: tl.constexpr,
    HAS_INIT: tl.constexpr, PREC: tl.constexpr, DEC: tl.constexpr,
):
    """Per (tile, head): G = in-tile cumsum of g (stored token-indexed for every later launch), P =
    decayed q k^T with its diagonal, and with DEC the tile's max |q| and |k| (the fp16 operand scales)."""
    j, bos, L, off, p, t, rmask, tok = par_tile(cseq, cj, seq_start, seq_len, chunk_off, pos0, HAS_INIT, C)
    hh = tl.program_id(1)
    rk = tl.arange(0, BK)
    km = rk < K
    i = tl.arange(0, C)
    g_t = load_tile(g + hh * K, tok, rmask, rk, km, H * K)
    G = tl.cumsum(g_t, axis=0)
    tl.store(Gb + (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :], G, mask=rmask[:, None] & km[None, :])
    gl = tl.min(G, axis=0)
    G = tl.where((t >= L)[:, None], gl[None, :], G)
    q_t = load_tile(q + hh * K, tok, rmask, rk, km, H * K)
    k_t = load_tile(k + hh * K, tok, rmask, rk, km, H * K)
    tl.debug_barrier()  # the level factors read G back from Gb, written above by other threads
    cidx = ((off + j) * H + hh).to(tl.int64)
    iq, sq = dec_scale(q_t, DEC)
    ik, sk = dec_scale(k_t, DEC)
    if DEC:  # the tile's q and k scales, for the other kernels (qk_scales)
        tl.store(qks + cidx * 2, sq)
        tl.store(qks + cidx * 2 + 1, sk)
    P = decayed_product(q_t, k_t, iq, sq, ik, sk, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, LOG2C, False, PREC,
                        DEC)
    tl.store(Pb + cidx * C * C + i[:, None] * C + i[None, :], P.to(Pb.dtype.element_ty))


@triton.jit
def carve_chunk_fwd_kernel(
    q, k, v, a, w, ud, uu, o, ubuf, Gb, Pb, qks,
    h0, m0, os0, pos0,
    hbuf, mbuf, abuf, gbuf, osf, sf, xbuf, xflag,
    seq_start, seq_len, chunk_off,
    scale, H,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, VEC_W: tl.constexpr,
    LOWP: tl.constexpr, PREC: tl.constexpr, PREC_INV: tl.constexpr, DEC: tl.constexpr, SUB: tl.constexpr,
    NV: tl.constexpr,
):
    """The forward sweep of one (sequence, head), or of its value slice vb with the V split: walks the
    tiles in order with the state in registers and writes o, the final state, m and o_sum, and for the
    backward the tile-start states, m, A, U and the erase gate b (see the module docstring)."""
    hh, nh, bos, L, off, p, NS, i, rk, km, cv, vm, vb = sweep_program(seq_start, seq_len, chunk_off, pos0, H,
                                                                      HAS_INIT, K, V, C, BK, BV, NV)
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
    rr, udt, upt = content_tiles(ud, uu, rk, km, cv, vm, hh, K, V, R, BR, HAS_CONTENT)
    # content term of the current content chunk (xbuf slot: the mbuf index of the m it reads)
    c = chunk_content_term(udt, upt, m, xbuf, xflag, off * H + hh, vb, rr, HAS_CONTENT, NV, BR)
    for j in range(0, NS):
        t, rmask, tok = chunk_rows(j, p, L, bos, C)
        cidx = ((off + j) * H + hh).to(tl.int64)
        tl.store(hbuf + cidx * KV + rk[:, None] * V + cv[None, :], S.to(hbuf.dtype.element_ty), mask=smask)
        tl.store(mbuf + cidx * V + cv, m, mask=vm)
        # content-dependent couplings and their inverse
        b = erase_gate(a, c, tok, rmask, rk, km, hh, H, K, HAS_CONTENT)
        tl.store(gbuf + (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :], b.to(gbuf.dtype.element_ty),
                 mask=first_split_only(rmask[:, None] & km[None, :], vb, NV))  # the erase gate, for the backward
        k_t = load_tile(k + hh * K, tok, rmask, rk, km, H * K)
        G, gl = load_decay(Gb, tok, rmask, t, L, rk, km, hh, H, K)
        e = b * k_t
        _, _, ik, sk = qk_scales(qks, cidx, DEC)
        M = decayed_product(e, k_t, ik, sk, ik, sk, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, LOG2C, True, PREC,
                            DEC)
        A = unit_lower_inverse(M, C, NB, PREC_INV)
        tl.store(abuf + cidx * C * C + i[:, None] * C + i[None, :], A.to(abuf.dtype.element_ty),
                 mask=first_split_only(i[:, None] < C, vb, NV))
        # operands of the state products (in the operand dtype; G and the factors end here)
        gam = tl.exp(G)
        ge = to_operand(gam * e, q, LOWP)
        kt = to_operand(k_t * tl.exp(gl[None, :] - G), q, LOWP)  # k exp(G_C - G)
        gq = to_operand(gam * load_tile(q + hh * K, tok, rmask, rk, km, H * K), q, LOWP)
        egl = tl.exp(gl)
        # values
        v_t = load_tile(v + hh * V, tok, rmask, cv, vm, H * V)
        if VEC_W:
            z = load_tile(w + hh * V, tok, rmask, cv, vm, H * V) * v_t
        else:
            w_r = tl.load(w + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0).to(tl.float32)
            z = w_r[:, None] * v_t
        Sd = to_operand(S, q, LOWP)
        rhs = tl.dot(-ge, Sd, acc=z, input_precision=PREC)
        U = tl.dot(to_operand(A, q, LOWP), to_operand(rhs, q, LOWP), input_precision=PREC)
        Ud = to_operand(U, q, LOWP)
        tl.store(ubuf + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :], Ud.to(ubuf.dtype.element_ty),
                 mask=rmask[:, None] & vm[None, :])  # the backward loads U instead of recomputing it
        P = tl.load(Pb + cidx * C * C + i[:, None] * C + i[None, :]).to(tl.float32)
        O = scale * tl.dot(to_operand(P, q, LOWP), Ud, acc=tl.dot(gq, Sd, input_precision=PREC), input_precision=PREC)
        tl.store(o + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :], O.to(o.dtype.element_ty),
                 mask=rmask[:, None] & vm[None, :])
        osum = osum + tl.sum(tl.where(rmask[:, None], O, 0.0), axis=0)
        # a content chunk (SUB tiles of C rows) ends with this tile: its mean becomes the next m_prev
        complete = (((j + 1) % SUB) == 0) & ((j + 1) * C <= p + L)
        m = tl.where(complete, osum / (C * SUB), m)
        osum = tl.where(complete, 0.0, osum)
        if HAS_CONTENT:
            if complete:  # the next content chunk's term, once per chunk
                # U_down and U_up are read here (8 KB each, from L1/L2) rather than held in registers
                # through the loop, which measured slower (register pressure in the sweep)
                _ur, udl, upl = content_tiles(ud, uu, rk, km, cv, vm, hh, K, V, R, BR, HAS_CONTENT)
                c = chunk_content_term(udl, upl, m, xbuf, xflag, (off + j + 1) * H + hh, vb, rr, HAS_CONTENT, NV,
                                       BR)
        S = tl.dot(tl.trans(kt), Ud, acc=egl[:, None] * S, input_precision=PREC)
    fidx = ((off + NS) * H + hh).to(tl.int64)
    tl.store(sf + nh * KV + rk[:, None] * V + cv[None, :], S, mask=smask)
    tl.store(mbuf + fidx * V + cv, m, mask=vm)
    tl.store(osf + nh * V + cv, osum, mask=vm)
