"""Triton kernels of CARVE, version 2 (see docs/kernels.md, section "v2").

Launches per forward+backward (the transposed backward sweep lives in triton_v2_bwdt):

  prep  (parallel, grid [tiles, H]): the in-tile cumulative log-decay G (fp32, token-indexed),
        P = decayed q k^T (lower with diagonal, [C, C] per tile) and, with fp16 decayed products, the
        tile's largest |q| and |k| (their scales). All content-independent.
  fwd   (sequential, grid [N, H]): one program per (sequence, head) walks its tiles with the
        [BK, BV] fp32 state in registers. Per tile: gates b (content term of the content chunk),
        M (strictly lower), A = (I + M)^-1 (16x16 substitution + nilpotent block merge),
        U = A (z - (Gam e) S0), O = s((Gam q) S0 + P U), m, S_next = exp(G_C) S0 + (k exp(G_C - G))^T U.
        Saves the tile-start states, m_prev, A, U and b for the backward.
  bprep (parallel): the dS-free parts of the backward (W1 = A^T kt, dR0, a2; see its docstring).
  bwd   (sequential, reverse; the transposed carve_v2_bwdt_kernel by default): dS and dm carried.
        Per tile: dR = dR0 + a2 corr^T + W1 dS, dv, dw, dM, the M part of de (needed at once: it feeds
        the content gradient of the previous chunk), da, dc; dS saved per tile for the post-pass.
  post  (parallel, grid [tiles, H, K / BKP]): dP and the state part of dq, dkt = U dS^T, the
        decayed-product gradients of P (dq, dk, dG) and the k part of M, then dg = reverse cumsum of
        dG inside each tile; writes dq, dk, dg in the input dtype.
  dvw   (parallel, scalar write gate with the transposed sweep): dv = w dR, dw = sum_v v dR.

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
def _tile(x, tok, rmask, cols, cmask, row_stride, TRANS: tl.constexpr = False):
    """[C, cols] tile of the rows tok in fp32, or its transpose [cols, C] (TRANS: the transposed sweep)."""
    if TRANS:
        ptr = x + tok[None, :].to(tl.int64) * row_stride + cols[:, None]
        m = cmask[:, None] & rmask[None, :]
    else:
        ptr = x + tok[:, None].to(tl.int64) * row_stride + cols[None, :]
        m = rmask[:, None] & cmask[None, :]
    return tl.load(ptr, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _chunk_rows(j, p, L, bos, C: tl.constexpr):
    i = tl.arange(0, C)
    t = j * C + i - p
    rmask = (t >= 0) & (t < L)
    return t, rmask, bos + t


@triton.jit
def _seq(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT: tl.constexpr):
    """Sequence n's start, length, buffer offset and start position p (inside its first chunk)."""
    bos = tl.load(seq_start + n)
    L = tl.load(seq_len + n)
    off = tl.load(chunk_off + n)
    if HAS_INIT:
        p = tl.load(pos0 + n)
    else:
        p = bos * 0
    return bos, L, off, p


@triton.jit
def _sweep(seq_start, seq_len, chunk_off, pos0, H, HAS_INIT: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
           C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, NV: tl.constexpr = 1):
    """The program of a sweep (grid [N * NV, H]): its head, (sequence, head) index, the sequence's start,
    length, buffer offset and start position, its tile count, the row, key and value ranges, and its
    value block vb. With NV > 1 the NV programs of one (sequence, head) each hold BV of the V state
    columns (value columns vb * BV ...); they are adjacent on grid axis 0 (see _vsum)."""
    n = tl.program_id(0) // NV
    vb = tl.program_id(0) % NV
    hh = tl.program_id(1)
    nh = (n * H + hh).to(tl.int64)
    bos, L, off, p = _seq(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT)
    NS = (p + L + C - 1) // C
    i = tl.arange(0, C)
    rk = tl.arange(0, BK)
    km = rk < K
    cv = vb * BV + tl.arange(0, BV)
    vm = cv < V
    return hh, nh, bos, L, off, p, NS, i, rk, km, cv, vm, vb


@triton.jit
def _par_tile(cseq, cj, seq_start, seq_len, chunk_off, pos0, HAS_INIT: tl.constexpr, C: tl.constexpr):
    """The tile of a parallel launch (grid axis 0 runs over all tiles of all sequences): its index j in
    its sequence, the sequence's start, length, buffer offset and start position p, and its rows."""
    ci = tl.program_id(0)
    n = tl.load(cseq + ci)
    j = tl.load(cj + ci)
    bos, L, off, p = _seq(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT)
    t, rmask, tok = _chunk_rows(j, p, L, bos, C)
    return j, bos, L, off, p, t, rmask, tok


@triton.jit
def _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K: tl.constexpr, TRANS: tl.constexpr = False):
    """Cumulative log-decay tile [C, BK] (or [BK, C], TRANS); trailing masked rows get G_last.
    Returns (G, G_last)."""
    G = _tile(Gb + hh * K, tok, rmask, rk, km, H * K, TRANS)
    # G <= 0, non-increasing, masked rows 0: the min is G at the last valid row
    if TRANS:
        gl = tl.min(G, axis=1)
        G = tl.where((t >= L)[None, :], gl[:, None], G)
    else:
        gl = tl.min(G, axis=0)
        G = tl.where((t >= L)[:, None], gl[None, :], G)
    return G, gl


@triton.jit
def _ddot(x, y, PREC: tl.constexpr, DEC: tl.constexpr):
    """Product of the decayed-product helpers. DEC: 0 = fp32 operands at PREC, 1 = bf16 operands,
    2 = fp16 operands (the callers scale them with _dscale first: fp16 has tf32's 10-bit mantissa but
    a small range)."""
    if DEC == 1:
        return tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16))
    elif DEC == 2:
        return tl.dot(x.to(tl.float16), y.to(tl.float16))
    else:
        return tl.dot(x, y, input_precision=PREC)


@triton.jit
def _dscale(x, DEC: tl.constexpr):
    """(1 / s, s) for an operand x of the decayed products: with fp16 operands (DEC 2) s = max |x| over
    the tile, so that every scaled entry x / s is at most 1 (fp16 overflows at 65504; entries below
    6e-5 s lose precision, their part of any sum is below fp16's rounding of the largest), else 1."""
    if DEC == 2:
        s = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
        s = tl.where(s > 0.0, s, 1.0)
        return 1.0 / s, s
    else:
        return 1.0, 1.0


@triton.jit
def _qk_scales(qks, cidx, DEC: tl.constexpr):
    """(1 / s_q, s_q, 1 / s_k, s_k): the tile's q and k scales saved by the prep kernel (DEC 2; they
    bound e = b k too, b < 1), else ones."""
    if DEC == 2:
        sq = tl.load(qks + cidx * 2)
        sk = tl.load(qks + cidx * 2 + 1)
        return 1.0 / sq, sq, 1.0 / sk, sk
    else:
        return 1.0, 1.0, 1.0, 1.0


@triton.jit
def _level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K: tl.constexpr, C: tl.constexpr, h,
                  GATHER: tl.constexpr, TRANS: tl.constexpr = False):
    """Dyadic level h: rows form groups of 2h, split into halves; e = the last row of the first half.
    Returns exp(-|G_x - G_e(x)|) per row x: exp(G_e - G_x) on the first half, exp(G_x - G_e) on the
    second (G is non-increasing), so every factor is <= 1. G_e comes from the tile itself (GATHER) or
    is read back from the G buffer; both give 0 on leading masked rows and G_last on trailing ones.
    TRANS: G is a [BK, C] tile (rows of the tile along its columns; read back only)."""
    i = tl.arange(0, C)
    if GATHER:
        ie = (i // (2 * h)) * (2 * h) + h - 1
        Ge = tl.gather(G, tl.broadcast_to(ie[:, None], G.shape), 0)
    else:
        te = j * C + (i // (2 * h)) * (2 * h) + h - 1 - p
        if TRANS:
            Ge = tl.load(Gb + ((bos + te)[None, :].to(tl.int64) * H + hh) * K + rk[:, None],
                         mask=km[:, None] & ((te >= 0) & (te < L))[None, :], other=0.0)
            Ge = tl.where((te >= L)[None, :], gl[:, None], Ge)
        else:
            Ge = tl.load(Gb + ((bos + te)[:, None].to(tl.int64) * H + hh) * K + rk[None, :],
                         mask=((te >= 0) & (te < L))[:, None] & km[None, :], other=0.0)
            Ge = tl.where((te >= L)[:, None], gl[None, :], Ge)
    return tl.exp(-tl.abs(G - Ge))


@triton.jit
def _level_mask(h, C: tl.constexpr, TRANS: tl.constexpr = False):
    """Pairs (r, s) of level h: same group of 2h rows, r in its second half, s in its first half; as a
    [C, C] mask indexed (r, s), or (s, r) with TRANS."""
    i = tl.arange(0, C)
    row = i[:, None]  # the mask's row index: r, or s with TRANS
    col = i[None, :]
    same = (row // (2 * h)) == (col // (2 * h))
    if TRANS:
        return same & (((row // h) % 2) == 0) & (((col // h) % 2) == 1)
    else:
        return same & (((row // h) % 2) == 1) & (((col // h) % 2) == 0)


@triton.jit
def _dec_fwd(x, y, ix, sx, iy, sy, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K: tl.constexpr, C: tl.constexpr,
             LOG2C: tl.constexpr, STRICT: tl.constexpr, PREC: tl.constexpr, DEC: tl.constexpr, GATHER: tl.constexpr,
             UNR: tl.constexpr):
    """D_rs = sum_i x_r,i y_s,i exp(G_r,i - G_s,i) for s < r (STRICT) or s <= r, 0 above. [C, C] fp32.

    Dyadic decomposition: every pair r > s belongs to exactly one level h (the largest power of two
    separating them in the chunk's binary tree); there exp(G_r - G_s) = exp(G_r - G_e) exp(G_e - G_s)
    with e the last row of the first half of their group, two factors <= 1, so each level is one
    masked tensor-core product and no exponent is ever positive, however strong the decay. The
    operands enter scaled by ix and iy (see _dscale), the result is scaled back by sx sy."""
    acc = tl.zeros((C, C), dtype=tl.float32)
    for lv in tl.range(0, LOG2C, loop_unroll_factor=UNR):  # UNR = 1: one level's tiles live at a time
        h = C // (2 << lv)
        f = _level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, h, GATHER)
        acc += tl.where(_level_mask(h, C), _ddot(x * (f * ix), tl.trans(y * (f * iy)), PREC, DEC), 0.0)
    acc = acc * (sx * sy)
    if not STRICT:
        i = tl.arange(0, C)
        acc += tl.where(i[:, None] == i[None, :], tl.sum(x * y, axis=1)[:, None], 0.0)
    return acc


@triton.jit
def _dec_bwd_dx(dD, y, iy, sy, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K: tl.constexpr, C: tl.constexpr,
                LOG2C: tl.constexpr, PREC: tl.constexpr, DEC: tl.constexpr, GATHER: tl.constexpr,
                UNR: tl.constexpr):
    """Gradient of a strict _dec_fwd with respect to its x: dx_r = sum_{s<r} dD_rs y_s E_rs, y scaled
    by iy (sy = 1 / iy). (The post pass forms the other decayed-product gradients in its own level loop.)"""
    idd, sd = _dscale(dD, DEC)
    dD = dD * idd
    dx = tl.zeros(y.shape, dtype=tl.float32)
    for lv in tl.range(0, LOG2C, loop_unroll_factor=UNR):
        h = C // (2 << lv)
        f = _level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, h, GATHER)
        dx += f * _ddot(tl.where(_level_mask(h, C), dD, 0.0), y * (f * iy), PREC, DEC)
    return dx * (sd * sy)


@triton.jit
def _inverse(M, C: tl.constexpr, NB: tl.constexpr, PREC_INV: tl.constexpr):
    """(I + M)^-1 for a strictly lower [C, C] M, in products only (no 3-D tiles, no row loops).

    Diagonal 16x16 blocks N = blockdiag(M): N^16 = 0, so (I + N)^-1 = (I - N)(I + N^2)(I + N^4)(I + N^8)
    (6 products, all blocks at once). The rest X = D Moff with D = (I + N)^-1 is block-strictly-lower,
    X^NB = 0, and (I + M)^-1 = (I + X)^-1 D = (I - X + X^2 - ...) D."""
    i = tl.arange(0, C)
    eye = (i[:, None] == i[None, :]).to(tl.float32)
    same = (i[:, None] // 16) == (i[None, :] // 16)
    N = tl.where(same, M, 0.0)
    D = eye - N
    N = tl.dot(N, N, input_precision=PREC_INV)
    D = D + tl.dot(D, N, input_precision=PREC_INV)
    N = tl.dot(N, N, input_precision=PREC_INV)
    D = D + tl.dot(D, N, input_precision=PREC_INV)
    N = tl.dot(N, N, input_precision=PREC_INV)
    D = D + tl.dot(D, N, input_precision=PREC_INV)
    if NB == 1:
        return D
    else:
        X = tl.dot(D, tl.where(same, 0.0, M), input_precision=PREC_INV)
        Y = eye - X
        for _ in tl.static_range(NB - 2):
            Y = eye - tl.dot(X, Y, input_precision=PREC_INV)
        return tl.dot(Y, D, input_precision=PREC_INV)


@triton.jit
def _up_tile(uu, rk, km, hh, K: tl.constexpr, R: tl.constexpr, BR: tl.constexpr):
    """U_up of head hh as a [BK, BR] fp32 tile (loaded once per program)."""
    rr = tl.arange(0, BR)
    return tl.load(uu + hh * K * R + rk[:, None] * R + rr[None, :], mask=km[:, None] & (rr[None, :] < R),
                   other=0.0).to(tl.float32)


@triton.jit
def _own(mask, vb, NV: tl.constexpr):
    """mask, kept only in the first of the NV programs of a (sequence, head) (the V split): for the
    stores of what they all compute alike."""
    if NV == 1:
        return mask
    else:
        return mask & (vb == 0)


@triton.jit
def _ld_acquire(ptr):
    """ld.acquire.gpu of each int32 in ptr, by the thread that holds it (GPU only)."""
    return tl.inline_asm_elementwise("ld.global.acquire.gpu.b32 $0, [$1];", "=r,l", [ptr], dtype=tl.int32,
                                     is_pure=False, pack=1)


@triton.jit
def _vsum(part, xbuf, xflag, slot, vb, rr, NV: tl.constexpr, BR: tl.constexpr):
    """Sum of a [BR] partial over the NV programs of one (sequence, head) (the V split, see _sweep):
    each writes its partial to slot `slot` of xbuf, counts itself in xflag[slot] (zeroed by the caller,
    one slot per use), waits until all NV have, and adds the NV partials in a fixed order, so every
    program gets the same sum. The NV programs must run at once: the dispatcher splits V only where the
    whole grid is resident (or, forced, relies on programs being started in grid order)."""
    if NV == 1:
        return part
    else:
        base = xbuf + slot * (NV * BR)
        tl.store(base + vb * BR + rr, part)
        tl.debug_barrier()  # every thread's part is written before the count is released
        tl.atomic_add(xflag + slot, 1, sem="release", scope="gpu")  # (result unused: one thread, no broadcast)
        # every thread polls the counter itself with acquire loads: no shared-memory broadcast of a
        # scalar atomic's result and no barrier inside the loop (each warp leaves it on its own)
        ptr = xflag + slot + rr * 0
        seen = _ld_acquire(ptr)
        while tl.min(seen, axis=0) < NV:
            seen = _ld_acquire(ptr)
        tot = tl.zeros((BR,), dtype=tl.float32)
        for h in tl.static_range(NV):
            tot += tl.load(base + h * BR + rr, cache_modifier=".cg")  # from L2: written by other SMs
        return tot


@triton.jit
def _content(udt, upt, m, xbuf, xflag, slot, vb, rr, HAS_CONTENT: tl.constexpr, NV: tl.constexpr,
               BR: tl.constexpr):
    """The content term c = U_up (U_down m) over key columns (0 without content). With m split over NV
    programs (the V split) each forms its part of U_down m over its value columns, and _vsum adds them."""
    if HAS_CONTENT:
        low = _vsum(tl.sum(udt * m[None, :], axis=1), xbuf, xflag, slot, vb, rr, NV, BR)
        return tl.sum(upt * low[None, :], axis=1)
    else:
        return 0.0


@triton.jit
def _content_tiles(ud, uu, rk, km, cv, vm, hh, K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, BR: tl.constexpr,
                   HAS_CONTENT: tl.constexpr):
    """(rr, U_down [BR, BV], U_up [BK, BR]) of head hh in fp32, or zeros without content; held by the sweeps."""
    rr = tl.arange(0, BR)
    if HAS_CONTENT:
        udt = tl.load(ud + hh * R * V + rr[:, None] * V + cv[None, :], mask=(rr[:, None] < R) & vm[None, :],
                      other=0.0).to(tl.float32)
        upt = _up_tile(uu, rk, km, hh, K, R, BR)
    else:
        udt = 0.0
        upt = 0.0
    return rr, udt, upt


@triton.jit
def _final_mean_grads(dmf, dosf, nh, cv, vm, V: tl.constexpr, BV: tl.constexpr, HAS_DMF: tl.constexpr,
                      HAS_DOSF: tl.constexpr):
    """Where the backward sweeps start: the gradients of the final m_prev and o_sum (zeros if not given)."""
    if HAS_DMF:
        dmn = tl.load(dmf + nh * V + cv, mask=vm, other=0.0)
    else:
        dmn = tl.zeros((BV,), dtype=tl.float32)
    if HAS_DOSF:
        dosv = tl.load(dosf + nh * V + cv, mask=vm, other=0.0)
    else:
        dosv = tl.zeros((BV,), dtype=tl.float32)
    return dmn, dosv


@triton.jit
def _erase_grads(de, k_t, b, rmask, deb, da, tb, tmask, dcc, HAS_CONTENT: tl.constexpr, TRANS: tl.constexpr,
                 STORE_DA: tl.constexpr = True):
    """Stores de (for the post-pass) and the erase-gate logit gradient da = k de b (1 - b) of a tile
    ([C, BK], or [BK, C] with TRANS), and returns the content gradient gathered so far plus its column sums.
    Not STORE_DA (the V split: de is this program's part, the post-pass adds the parts and forms da)."""
    tl.store(deb + tb, de.to(deb.dtype.element_ty), mask=tmask)
    if TRANS:
        dlogit = tl.where(rmask[None, :], (k_t * b * (1.0 - b)) * de, 0.0)
    else:
        dlogit = tl.where(rmask[:, None], k_t * de * b * (1.0 - b), 0.0)
    if STORE_DA:
        tl.store(da + tb, dlogit.to(da.dtype.element_ty), mask=tmask)
    if HAS_CONTENT:
        if TRANS:
            dcc += tl.sum(dlogit, axis=1)
        else:
            dcc += tl.sum(dlogit, axis=0)
    return dcc


@triton.jit
def _content_chunk_grad(dcc, dmn, complete, udt, upt, dcb, dlowb, cidx, rk, km, rr, K: tl.constexpr,
                        R: tl.constexpr, BK: tl.constexpr, HAS_CONTENT: tl.constexpr,
                        FULL_CONTENT_GRAD: tl.constexpr, xbuf, xflag, vb, NV: tl.constexpr, BR: tl.constexpr):
    """At the first tile of a content chunk (the last one a backward sweep visits): stores the chunk's
    content gradient dc and U_up^T dc (dcb and dlowb hold per-chunk sums on that tile, zero elsewhere),
    and returns (dcc, dmn) for the previous chunk: dcc reset, dmn the gradient of its mean (its m_prev's
    gradient through this chunk's content term, plus dm_f through an incomplete chunk).
    With the V split (NV > 1) dcc is this program's part: dcb (its own slice of NV) gets the part, and
    U_up^T dc is summed over the NV programs (_vsum) before it feeds dm."""
    if HAS_CONTENT:
        tl.store(dcb + cidx * K + rk, dcc, mask=km)
        dlow = _vsum(tl.sum(upt * dcc[:, None], axis=0), xbuf, xflag, cidx, vb, rr, NV, BR)
        tl.store(dlowb + cidx * R + rr, dlow, mask=_own(rr < R, vb, NV))
        if FULL_CONTENT_GRAD:
            dmn = tl.where(complete, 0.0, dmn) + tl.sum(udt * dlow[:, None], axis=0)
        else:
            dmn = tl.where(complete, 0.0, dmn)
        dcc = tl.zeros((BK,), dtype=tl.float32)
    else:
        dmn = tl.where(complete, 0.0, dmn)
    return dcc, dmn


@triton.jit
def _gates(a, c, tok, rmask, rk, km, hh, H, K: tl.constexpr, HAS_CONTENT: tl.constexpr):
    """b = sigmoid(a + c), c the chunk's content term over key columns (see _content)."""
    a_t = _tile(a + hh * K, tok, rmask, rk, km, H * K)
    if HAS_CONTENT:
        a_t = a_t + c[None, :]
    return tl.sigmoid(a_t)


@triton.jit
def carve_v2_prep_kernel(
    q, k, g, Gb, Pb, qks,
    seq_start, seq_len, chunk_off, pos0, cseq, cj,
    H,
    K: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr, BK: tl.constexpr,
    HAS_INIT: tl.constexpr, PREC: tl.constexpr, DEC: tl.constexpr, GATHER: tl.constexpr, UNR: tl.constexpr,
):
    j, bos, L, off, p, t, rmask, tok = _par_tile(cseq, cj, seq_start, seq_len, chunk_off, pos0, HAS_INIT, C)
    hh = tl.program_id(1)
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
    if not GATHER:
        tl.debug_barrier()  # the level factors read G back from Gb, written above by other threads
    cidx = ((off + j) * H + hh).to(tl.int64)
    iq, sq = _dscale(q_t, DEC)
    ik, sk = _dscale(k_t, DEC)
    if DEC == 2:  # the tile's q and k scales, for the other kernels (_qk_scales)
        tl.store(qks + cidx * 2, sq)
        tl.store(qks + cidx * 2 + 1, sk)
    P = _dec_fwd(q_t, k_t, iq, sq, ik, sk, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, LOG2C, False, PREC, DEC,
                 GATHER, UNR)
    tl.store(Pb + cidx * C * C + i[:, None] * C + i[None, :], P.to(Pb.dtype.element_ty))


@triton.jit
def carve_v2_fwd_kernel(
    q, k, v, a, w, ud, uu, o, ubuf, Gb, Pb, qks,
    h0, m0, os0, pos0,
    hbuf, mbuf, abuf, gbuf, osf, sf, xbuf, xflag,
    seq_start, seq_len, chunk_off,
    scale, H,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, VEC_W: tl.constexpr,
    LOWP: tl.constexpr, PREC: tl.constexpr, PREC_INV: tl.constexpr, DEC: tl.constexpr, SUB: tl.constexpr,
    GATHER: tl.constexpr, UNR: tl.constexpr, NV: tl.constexpr,
):
    hh, nh, bos, L, off, p, NS, i, rk, km, cv, vm, vb = _sweep(seq_start, seq_len, chunk_off, pos0, H, HAS_INIT, K, V,
                                                                C, BK, BV, NV)
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
    rr, udt, upt = _content_tiles(ud, uu, rk, km, cv, vm, hh, K, V, R, BR, HAS_CONTENT)
    # content term of the current content chunk (xbuf slot: the mbuf index of the m it reads)
    c = _content(udt, upt, m, xbuf, xflag, off * H + hh, vb, rr, HAS_CONTENT, NV, BR)
    for j in range(0, NS):
        t, rmask, tok = _chunk_rows(j, p, L, bos, C)
        cidx = ((off + j) * H + hh).to(tl.int64)
        tl.store(hbuf + cidx * KV + rk[:, None] * V + cv[None, :], S.to(hbuf.dtype.element_ty), mask=smask)
        tl.store(mbuf + cidx * V + cv, m, mask=vm)
        # content-dependent couplings and their inverse
        b = _gates(a, c, tok, rmask, rk, km, hh, H, K, HAS_CONTENT)
        tl.store(gbuf + (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :], b.to(gbuf.dtype.element_ty),
                 mask=_own(rmask[:, None] & km[None, :], vb, NV))  # the erase gate, for the backward kernels
        k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
        G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
        e = b * k_t
        _, _, ik, sk = _qk_scales(qks, cidx, DEC)
        M = _dec_fwd(e, k_t, ik, sk, ik, sk, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, LOG2C, True, PREC, DEC,
                     GATHER, UNR)
        A = _inverse(M, C, NB, PREC_INV)
        tl.store(abuf + cidx * C * C + i[:, None] * C + i[None, :], A.to(abuf.dtype.element_ty),
                 mask=_own(i[:, None] < C, vb, NV))
        # operands of the state products (in the operand dtype; G and the factors end here)
        gam = tl.exp(G)
        ge = _cast(gam * e, q, LOWP)
        kt = _cast(k_t * tl.exp(gl[None, :] - G), q, LOWP)  # k exp(G_C - G)
        gq = _cast(gam * _tile(q + hh * K, tok, rmask, rk, km, H * K), q, LOWP)
        egl = tl.exp(gl)
        # values
        v_t = _tile(v + hh * V, tok, rmask, cv, vm, H * V)
        if VEC_W:
            z = _tile(w + hh * V, tok, rmask, cv, vm, H * V) * v_t
        else:
            w_r = tl.load(w + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0).to(tl.float32)
            z = w_r[:, None] * v_t
        Sd = _cast(S, q, LOWP)
        rhs = tl.dot(-ge, Sd, acc=z, input_precision=PREC)
        U = tl.dot(_cast(A, q, LOWP), _cast(rhs, q, LOWP), input_precision=PREC)
        Ud = _cast(U, q, LOWP)
        tl.store(ubuf + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :], Ud.to(ubuf.dtype.element_ty),
                 mask=rmask[:, None] & vm[None, :])  # the backward loads U instead of recomputing it
        P = tl.load(Pb + cidx * C * C + i[:, None] * C + i[None, :]).to(tl.float32)
        O = scale * tl.dot(_cast(P, q, LOWP), Ud, acc=tl.dot(gq, Sd, input_precision=PREC), input_precision=PREC)
        tl.store(o + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :], O.to(o.dtype.element_ty),
                 mask=rmask[:, None] & vm[None, :])
        osum = osum + tl.sum(tl.where(rmask[:, None], O, 0.0), axis=0)
        # a content chunk (SUB tiles of C rows) ends with this tile: its mean becomes the next m_prev
        complete = (((j + 1) % SUB) == 0) & ((j + 1) * C <= p + L)
        m = tl.where(complete, osum / (C * SUB), m)
        osum = tl.where(complete, 0.0, osum)
        if HAS_CONTENT:
            if complete:  # the next content chunk's term, once per chunk
                # U_down and U_up are read here (8 KB each, from L1/L2) rather than held in registers by
                # the loop: on the H200 the held tiles cost the forward sweep 2.16 -> 2.47 ms at T = 4096
                _ur, udl, upl = _content_tiles(ud, uu, rk, km, cv, vm, hh, K, V, R, BR, HAS_CONTENT)
                c = _content(udl, upl, m, xbuf, xflag, (off + j + 1) * H + hh, vb, rr, HAS_CONTENT, NV, BR)
        S = tl.dot(tl.trans(kt), Ud, acc=egl[:, None] * S, input_precision=PREC)
    fidx = ((off + NS) * H + hh).to(tl.int64)
    tl.store(sf + nh * KV + rk[:, None] * V + cv[None, :], S, mask=smask)
    tl.store(mbuf + fidx * V + cv, m, mask=vm)
    tl.store(osf + nh * V + cv, osum, mask=vm)


@triton.jit
def carve_v2_bprep_kernel(
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
    j, bos, L, off, p, t, rmask, tok = _par_tile(cseq, cj, seq_start, seq_len, chunk_off, pos0, HAS_INIT, C)
    hh = tl.program_id(1)
    rk = tl.arange(0, BK)
    km = rk < K
    cv = tl.arange(0, BV)
    vm = cv < V
    i = tl.arange(0, C)
    cidx = ((off + j) * H + hh).to(tl.int64)
    k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
    G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
    kt = _cast(k_t * tl.exp(gl[None, :] - G), do, LOWP)
    A = tl.load(abuf + cidx * C * C + i[:, None] * C + i[None, :]).to(tl.float32)
    Ad = _cast(A, do, LOWP)
    P = tl.load(Pb + cidx * C * C + i[:, None] * C + i[None, :]).to(tl.float32)
    dOd = _cast(_tile(do + hh * V, tok, rmask, cv, vm, H * V), do, LOWP)
    trow = tok[:, None].to(tl.int64) * H + hh
    W1 = tl.dot(tl.trans(Ad), kt, input_precision=PREC)
    tl.store(w1b + trow * K + rk[None, :], W1.to(w1b.dtype.element_ty), mask=rmask[:, None] & km[None, :])
    dU0 = scale * tl.dot(tl.trans(_cast(P, do, LOWP)), dOd, input_precision=PREC)
    dR0 = tl.dot(tl.trans(Ad), _cast(dU0, do, LOWP), input_precision=PREC)
    tl.store(dr0b + trow * V + cv[None, :], dR0, mask=rmask[:, None] & vm[None, :])
    pcol = scale * tl.sum(tl.where(rmask[:, None], P, 0.0), axis=0)  # s P^T 1 over the valid rows
    a2 = tl.sum(A * pcol[:, None], axis=0)
    tl.store(a2b + tok.to(tl.int64) * H + hh, a2, mask=rmask)


@triton.jit
def carve_v2_bwd_kernel(
    q, k, v, a, w, ud, uu, do, Gb, ubuf, w1b, dr0b, a2b, qks,
    pos0, hbuf, mbuf,
    dht, dmf, dosf,
    corrb, dkb, deb, dglb, dsb, da, dv, dw, dMb, dcb, dlowb, dS0, dm0, dos0,
    seq_start, seq_len, chunk_off,
    scale, H,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, FULL_CONTENT_GRAD: tl.constexpr, VEC_W: tl.constexpr,
    HAS_DHT: tl.constexpr, HAS_DMF: tl.constexpr, HAS_DOSF: tl.constexpr,
    LOWP: tl.constexpr, PREC: tl.constexpr, DEC: tl.constexpr, SUB: tl.constexpr, GATHER: tl.constexpr, UNR: tl.constexpr,
    DS_OUT: tl.constexpr,
):
    hh, nh, bos, L, off, p, NS, i, rk, km, cv, vm, _vb = _sweep(seq_start, seq_len, chunk_off, pos0, H, HAS_INIT, K, V,
                                                               C, BK, BV)
    smask = km[:, None] & vm[None, :]
    KV = K * V
    if HAS_DHT:
        dS = tl.load(dht + nh * KV + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
    else:
        dS = tl.zeros((BK, BV), dtype=tl.float32)
    dmn, dosv = _final_mean_grads(dmf, dosf, nh, cv, vm, V, BV, HAS_DMF, HAS_DOSF)
    dos0v = dosv
    dcc = tl.zeros((BK,), dtype=tl.float32)  # content gradient of the current content chunk, gathered
    c = tl.zeros((BK,), dtype=tl.float32)  # content term of the current content chunk
    rr, udt, upt = _content_tiles(ud, uu, rk, km, cv, vm, hh, K, V, R, BR, HAS_CONTENT)
    strict = i[:, None] > i[None, :]
    for jj in range(0, NS):
        j = NS - 1 - jj
        t, rmask, tok = _chunk_rows(j, p, L, bos, C)
        cidx = ((off + j) * H + hh).to(tl.int64)
        complete = ((j // SUB) + 1) * (C * SUB) <= p + L  # this tile's content chunk is complete
        if DS_OUT:  # the post-pass forms dkt = U dS^T and the exp(G_C) gradient from it
            tl.store(dsb + cidx * KV + rk[:, None] * V + cv[None, :], dS.to(dsb.dtype.element_ty), mask=smask)
        if HAS_CONTENT:
            if ((j % SUB) == SUB - 1) | (jj == 0):  # the first tile of a content chunk in this reverse sweep
                c = _content(udt, upt, tl.load(mbuf + cidx * V + cv, mask=vm, other=0.0), mbuf, mbuf, cidx, 0,
                               rr, HAS_CONTENT, 1, BR)
        # operands of the products, in the operand dtype (recomputed in fp32 further down where needed)
        b = _gates(a, c, tok, rmask, rk, km, hh, H, K, HAS_CONTENT)
        k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
        G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
        gam = tl.exp(G)
        ge = _cast(gam * b * k_t, q, LOWP)
        gq = _cast(gam * _tile(q + hh * K, tok, rmask, rk, km, H * K), q, LOWP)
        egl = tl.exp(gl)
        S0r = tl.load(hbuf + cidx * KV + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
        if not DS_OUT:
            dgl = tl.sum(S0r.to(tl.float32) * dS, axis=1)  # gradient of exp(G_C) through exp(G_C) S0
        if LOWP:
            S0d = S0r.to(q.dtype.element_ty)
        else:
            S0d = S0r.to(tl.float32)
        v_t = _tile(v + hh * V, tok, rmask, cv, vm, H * V)
        if VEC_W:
            w_t = _tile(w + hh * V, tok, rmask, cv, vm, H * V)
        else:
            w_r = tl.load(w + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0).to(tl.float32)
            w_t = w_r[:, None]  # broadcast where used, not materialised as a tile
        vmask = rmask[:, None] & vm[None, :]
        trow = tok[:, None].to(tl.int64) * H + hh
        Ud = _cast(tl.load(ubuf + trow * V + cv[None, :], mask=vmask, other=0.0), q, LOWP)  # saved by the forward
        corr = tl.where(complete, dmn / (C * SUB), dosv)
        tl.store(corrb + cidx * V + cv, corr, mask=vm)  # the post-pass forms dP and dq with it
        dO = _tile(do + hh * V, tok, rmask, cv, vm, H * V)
        dOd = _cast(tl.where(vmask, dO + corr[None, :], 0.0), q, LOWP)
        dSd = _cast(dS, q, LOWP)
        # dR = A^T (s P^T dO' + kt dS), with the dS-free parts from the parallel pre-pass
        W1 = _cast(tl.load(w1b + trow * K + rk[None, :], mask=rmask[:, None] & km[None, :], other=0.0), q, LOWP)
        a2 = tl.load(a2b + tok.to(tl.int64) * H + hh, mask=rmask, other=0.0)
        dR = tl.dot(W1, dSd, acc=tl.load(dr0b + trow * V + cv[None, :], mask=vmask, other=0.0)
                    + a2[:, None] * corr[None, :], input_precision=PREC)
        tl.store(dv + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :], (w_t * dR).to(dv.dtype.element_ty),
                 mask=vmask)
        if VEC_W:
            tl.store(dw + (tok[:, None].to(tl.int64) * H + hh) * V + cv[None, :],
                     (v_t * dR).to(dw.dtype.element_ty), mask=vmask)
        else:
            tl.store(dw + tok.to(tl.int64) * H + hh, tl.sum(v_t * dR, axis=1).to(dw.dtype.element_ty), mask=rmask)
        dRd = _cast(dR, q, LOWP)
        dM = tl.where(strict, -tl.dot(dRd, tl.trans(Ud), input_precision=PREC), 0.0)
        tl.store(dMb + cidx * C * C + i[:, None] * C + i[None, :], dM)
        dge = -tl.dot(dRd, tl.trans(S0d), input_precision=PREC)
        if not DS_OUT:
            dkt = tl.dot(Ud, tl.trans(dSd), input_precision=PREC)
        dS = egl[:, None] * dS + scale * tl.dot(tl.trans(gq), dOd, input_precision=PREC) - tl.dot(
            tl.trans(ge), dRd, input_precision=PREC)
        # K-sized gradients (fp32, recomputed from the inputs): X = exp(G) dgq, Y = exp(G_C - G) dkt and
        # de go to the post-pass, which adds the decayed-product parts and forms dq, dk, dg
        b = _gates(a, c, tok, rmask, rk, km, hh, H, K, HAS_CONTENT)
        k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
        G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
        gam = tl.exp(G)
        tmask = rmask[:, None] & km[None, :]
        tb = (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :]
        if not DS_OUT:
            Y = tl.exp(gl[None, :] - G) * dkt
            tl.store(dkb + tb, Y, mask=tmask)
            tl.store(dglb + cidx * K + rk, tl.sum(k_t * Y, axis=0) + egl * dgl, mask=km)
        _, _, ik, sk = _qk_scales(qks, cidx, DEC)
        deM = _dec_bwd_dx(dM, k_t, ik, sk, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, LOG2C, PREC, DEC, GATHER,
                          UNR)
        dcc = _erase_grads(gam * dge + deM, k_t, b, rmask, deb, da, tb, tmask, dcc, HAS_CONTENT, False)
        dos0v = tl.where(j == 0, corr, dos0v)
        if (j % SUB) == 0:  # the first tile of a content chunk, the last one visited (_content_chunk_grad)
            dcc, dmn = _content_chunk_grad(dcc, dmn, complete, udt, upt, dcb, dlowb, cidx, rk, km, rr, K, R, BK,
                                           HAS_CONTENT, FULL_CONTENT_GRAD, dcb, dcb, 0, 1, BR)
    tl.store(dS0 + nh * KV + rk[:, None] * V + cv[None, :], dS, mask=smask)
    tl.store(dm0 + nh * V + cv, dmn, mask=vm)
    tl.store(dos0 + nh * V + cv, dos0v, mask=vm)


@triton.jit
def carve_v2_post_kernel(
    q, k, gbuf, do, Gb, ubuf, hbuf, corrb, dMb, dkb, deb, dglb, dsb, qks, dq, dk, dg, da,
    seq_start, seq_len, chunk_off, pos0, cseq, cj,
    scale, H, de_part, dm_part,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr, NB: tl.constexpr, LOG2C: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr, BKP: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CONTENT: tl.constexpr, LOWP: tl.constexpr, PREC: tl.constexpr,
    DEC: tl.constexpr, GATHER: tl.constexpr, UNR: tl.constexpr, DS_OUT: tl.constexpr, NV: tl.constexpr,
):
    """With the V split (NV > 1) the sweep saved NV parts of de and dM (de_part and dm_part elements
    apart): they are added here, and da = k de b (1 - b) is formed here instead of in the sweep."""
    j, bos, L, off, p, t, rmask, tok = _par_tile(cseq, cj, seq_start, seq_len, chunk_off, pos0, HAS_INIT, C)
    hh = tl.program_id(1)
    rk = tl.program_id(2) * BKP + tl.arange(0, BKP)  # key columns are independent here: split over programs
    km = rk < K
    i = tl.arange(0, C)
    cidx = ((off + j) * H + hh).to(tl.int64)
    cv = tl.arange(0, BV)
    vm = cv < V
    b = _tile(gbuf + hh * K, tok, rmask, rk, km, H * K)  # the erase gate, saved by the forward
    k_t = _tile(k + hh * K, tok, rmask, rk, km, H * K)
    q_t = _tile(q + hh * K, tok, rmask, rk, km, H * K)
    G, gl = _load_G(Gb, tok, rmask, t, L, rk, km, hh, H, K)
    e = b * k_t
    # dP = s dO' U^T and dq's state part s dO' S0^T, with dO' = dO + corr (the sweep's content correction)
    vmask = rmask[:, None] & vm[None, :]
    trow = tok[:, None].to(tl.int64) * H + hh
    corr = tl.load(corrb + cidx * V + cv, mask=vm, other=0.0)
    dOd = _cast(tl.where(vmask, _tile(do + hh * V, tok, rmask, cv, vm, H * V) + corr[None, :], 0.0), q, LOWP)
    Ud = _cast(tl.load(ubuf + trow * V + cv[None, :], mask=vmask, other=0.0), q, LOWP)
    dP = tl.where(i[:, None] >= i[None, :], scale * tl.dot(dOd, tl.trans(Ud), input_precision=PREC), 0.0)
    S0r = tl.load(hbuf + cidx * K * V + rk[:, None] * V + cv[None, :], mask=km[:, None] & vm[None, :], other=0.0)
    S0d = _cast(S0r.to(tl.float32), q, LOWP)
    X = tl.exp(G) * (scale * tl.dot(dOd, tl.trans(S0d), input_precision=PREC))
    tmask = rmask[:, None] & km[None, :]
    tb = (tok[:, None].to(tl.int64) * H + hh) * K + rk[None, :]
    if DS_OUT:  # the sweep saved the state gradient dS at this tile's end: dkt = U dS^T, Y = exp(G_C - G) dkt
        dSr = tl.load(dsb + cidx * K * V + rk[:, None] * V + cv[None, :], mask=km[:, None] & vm[None, :], other=0.0)
        Y = tl.exp(gl[None, :] - G) * tl.dot(Ud, tl.trans(_cast(dSr.to(tl.float32), q, LOWP)), input_precision=PREC)
        # gradient of the tile's decay exp(G_C): through exp(G_C) S0 and through k exp(G_C - G)
        dglv = tl.exp(gl) * tl.sum(S0r.to(tl.float32) * dSr.to(tl.float32), axis=1) + tl.sum(k_t * Y, axis=0)
    else:
        Y = tl.load(dkb + tb, mask=tmask, other=0.0)
        dglv = tl.load(dglb + cidx * K + rk, mask=km, other=0.0)
    dM = tl.load(dMb + cidx * C * C + i[:, None] * C + i[None, :])
    for hv in tl.static_range(1, NV):
        dM += tl.load(dMb + hv * dm_part + cidx * C * C + i[:, None] * C + i[None, :])
    dd = tl.sum(tl.where(i[:, None] == i[None, :], dP, 0.0), axis=1)  # P's diagonal (no decay)
    # the decayed-product gradients of P (q side and k side) and of M (k side) in one pass over the
    # dyadic levels, sharing each level's factor (as in _dec_bwd_dx); operands scaled by _dscale
    idP, sdP = _dscale(dP, DEC)
    idM, sdM = _dscale(dM, DEC)
    iq, sq, ik, sk = _qk_scales(qks, cidx, DEC)
    ie, se = ik, sk  # |e| = b |k| <= |k|
    dP = dP * idP
    dM = dM * idM
    cqk = sdP * sq  # scale of the dP^T (q f) part of dkK, and below of the dM^T (e f) part
    cme = sdM * se
    dqP = tl.zeros((C, BKP), dtype=tl.float32)
    dkK = tl.zeros((C, BKP), dtype=tl.float32)
    for lv in tl.range(0, LOG2C, loop_unroll_factor=UNR):
        h = C // (2 << lv)
        f = _level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, h, GATHER)
        lm = _level_mask(h, C)
        dPh = tl.where(lm, dP, 0.0)
        dMh = tl.where(lm, dM, 0.0)
        dqP += f * _ddot(dPh, k_t * (f * ik), PREC, DEC)
        dkK += f * (cqk * _ddot(tl.trans(dPh), q_t * (f * iq), PREC, DEC)
                    + cme * _ddot(tl.trans(dMh), e * (f * ie), PREC, DEC))
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


__all__ = ["carve_v2_prep_kernel", "carve_v2_fwd_kernel", "carve_v2_bprep_kernel", "carve_v2_bwd_kernel",
           "carve_v2_post_kernel", "triton"]
