"""Triton device functions shared by the chunk kernels (chunk_fwd, chunk_bwd, chunk_grads, wide_kernels).

Tiles: rows of a tile are positions on the sequence's chunk grid (a sequence starting at position p
inside a chunk has its first tile's leading p rows masked). Masked rows load as zeros; the trailing
masked rows of an incomplete last chunk get G = G_last (the decay of the last valid row), so that no
exponent of a decay difference is positive there either.

Decayed products (``decayed_product``, ``level_factor``): every exponent evaluated is G_r - G_s with
r >= s (or G_r itself), so <= 0, however strong the decay: pairs are split by dyadic levels and each
level is one masked tensor-core product of operands scaled by two factors <= 1.

Precision: LOWP (bf16 inputs on a GPU) casts the operands of the big products to the input dtype with
fp32 accumulation (``to_operand``); otherwise PREC (``ieee`` in the interpreter, ``tf32`` on a GPU).
DEC: the decayed products take tile-scaled fp16 operands (``dec_dot``, ``dec_scale``).

The V split: NV programs of one (sequence, head) each hold a slice of the state's value columns and
exchange their partial content signals through ``split_sum``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def to_operand(x, ref, LOWP: tl.constexpr):
    if LOWP:
        return x.to(ref.dtype.element_ty)
    else:
        return x


@triton.jit
def load_tile(x, tok, rmask, cols, cmask, row_stride, TRANS: tl.constexpr = False):
    """[C, cols] tile of the rows tok in fp32, or its transpose [cols, C] (TRANS: the transposed sweep)."""
    if TRANS:
        ptr = x + tok[None, :].to(tl.int64) * row_stride + cols[:, None]
        m = cmask[:, None] & rmask[None, :]
    else:
        ptr = x + tok[:, None].to(tl.int64) * row_stride + cols[None, :]
        m = rmask[:, None] & cmask[None, :]
    return tl.load(ptr, mask=m, other=0.0).to(tl.float32)


@triton.jit
def chunk_rows(j, p, L, bos, C: tl.constexpr):
    i = tl.arange(0, C)
    t = j * C + i - p
    rmask = (t >= 0) & (t < L)
    return t, rmask, bos + t


@triton.jit
def seq_info(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT: tl.constexpr):
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
def sweep_program(seq_start, seq_len, chunk_off, pos0, H, HAS_INIT: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
           C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, NV: tl.constexpr = 1):
    """The program of a sweep (grid [N * NV, H]): its head, (sequence, head) index, the sequence's start,
    length, buffer offset and start position, its tile count, the row, key and value ranges, and its
    value block vb. With NV > 1 the NV programs of one (sequence, head) each hold BV of the V state
    columns (value columns vb * BV ...); they are adjacent on grid axis 0 (see split_sum)."""
    n = tl.program_id(0) // NV
    vb = tl.program_id(0) % NV
    hh = tl.program_id(1)
    nh = (n * H + hh).to(tl.int64)
    bos, L, off, p = seq_info(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT)
    NS = (p + L + C - 1) // C
    i = tl.arange(0, C)
    rk = tl.arange(0, BK)
    km = rk < K
    cv = vb * BV + tl.arange(0, BV)
    vm = cv < V
    return hh, nh, bos, L, off, p, NS, i, rk, km, cv, vm, vb


@triton.jit
def par_tile(cseq, cj, seq_start, seq_len, chunk_off, pos0, HAS_INIT: tl.constexpr, C: tl.constexpr):
    """The tile of a parallel launch (grid axis 0 runs over all tiles of all sequences): its index j in
    its sequence, the sequence's start, length, buffer offset and start position p, and its rows."""
    ci = tl.program_id(0)
    n = tl.load(cseq + ci)
    j = tl.load(cj + ci)
    bos, L, off, p = seq_info(n, seq_start, seq_len, chunk_off, pos0, HAS_INIT)
    t, rmask, tok = chunk_rows(j, p, L, bos, C)
    return j, bos, L, off, p, t, rmask, tok


@triton.jit
def load_decay(Gb, tok, rmask, t, L, rk, km, hh, H, K: tl.constexpr, TRANS: tl.constexpr = False):
    """Cumulative log-decay tile [C, BK] (or [BK, C], TRANS); trailing masked rows get G_last.
    Returns (G, G_last)."""
    G = load_tile(Gb + hh * K, tok, rmask, rk, km, H * K, TRANS)
    # G <= 0, non-increasing, masked rows 0: the min is G at the last valid row
    if TRANS:
        gl = tl.min(G, axis=1)
        G = tl.where((t >= L)[None, :], gl[:, None], G)
    else:
        gl = tl.min(G, axis=0)
        G = tl.where((t >= L)[:, None], gl[None, :], G)
    return G, gl


@triton.jit
def dec_dot(x, y, PREC: tl.constexpr, DEC: tl.constexpr):
    """Product of the decayed-product helpers. DEC (true with 16-bit inputs on a GPU): fp16 operands,
    which the callers scale with dec_scale first (fp16 has tf32's 10-bit mantissa at the 16-bit
    tensor-core rate, but a small range); else fp32 operands at PREC."""
    if DEC:
        return tl.dot(x.to(tl.float16), y.to(tl.float16))
    else:
        return tl.dot(x, y, input_precision=PREC)


@triton.jit
def dec_scale(x, DEC: tl.constexpr):
    """(1 / s, s) for an operand x of the decayed products: with fp16 operands (DEC) s = max |x| over
    the tile, so that every scaled entry x / s is at most 1 (fp16 overflows at 65504; entries below
    6e-5 s lose precision, their part of any sum is below fp16's rounding of the largest), else 1."""
    if DEC:
        s = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
        s = tl.where(s > 0.0, s, 1.0)
        return 1.0 / s, s
    else:
        return 1.0, 1.0


@triton.jit
def qk_scales(qks, cidx, DEC: tl.constexpr):
    """(1 / s_q, s_q, 1 / s_k, s_k): the tile's q and k scales saved by the prep kernel (DEC; they
    bound e = b k too, b < 1), else ones."""
    if DEC:
        sq = tl.load(qks + cidx * 2)
        sk = tl.load(qks + cidx * 2 + 1)
        return 1.0 / sq, sq, 1.0 / sk, sk
    else:
        return 1.0, 1.0, 1.0, 1.0


@triton.jit
def level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K: tl.constexpr, C: tl.constexpr, h,
                 TRANS: tl.constexpr = False):
    """Dyadic level h: rows form groups of 2h, split into halves; e = the last row of the first half.
    Returns exp(-|G_x - G_e(x)|) per row x: exp(G_e - G_x) on the first half, exp(G_x - G_e) on the
    second (G is non-increasing), so every factor is <= 1. G_e is read back from the G buffer (a
    gather from the tile in registers would need a cross-thread shuffle per level): 0 on leading masked
    rows, G_last on trailing ones. TRANS: G is a [BK, C] tile (rows of the tile along its columns)."""
    i = tl.arange(0, C)
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
def level_mask(h, C: tl.constexpr, TRANS: tl.constexpr = False):
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
def decayed_product(x, y, ix, sx, iy, sy, G, gl, Gb, j, p, L, bos, rk, km, hh, H, K: tl.constexpr,
                    C: tl.constexpr, LOG2C: tl.constexpr, STRICT: tl.constexpr, PREC: tl.constexpr,
                    DEC: tl.constexpr):
    """D_rs = sum_i x_r,i y_s,i exp(G_r,i - G_s,i) for s < r (STRICT) or s <= r, 0 above. [C, C] fp32.

    Dyadic decomposition: every pair r > s belongs to exactly one level h (the largest power of two
    separating them in the chunk's binary tree); there exp(G_r - G_s) = exp(G_r - G_e) exp(G_e - G_s)
    with e the last row of the first half of their group, two factors <= 1, so each level is one
    masked tensor-core product and no exponent is ever positive, however strong the decay. The
    operands enter scaled by ix and iy (see dec_scale), the result is scaled back by sx sy."""
    acc = tl.zeros((C, C), dtype=tl.float32)
    for lv in tl.range(0, LOG2C, loop_unroll_factor=1):  # not unrolled: one level's tiles live at a time
        h = C // (2 << lv)
        f = level_factor(G, gl, Gb, j, p, L, bos, rk, km, hh, H, K, C, h)
        acc += tl.where(level_mask(h, C), dec_dot(x * (f * ix), tl.trans(y * (f * iy)), PREC, DEC), 0.0)
    acc = acc * (sx * sy)
    if not STRICT:
        i = tl.arange(0, C)
        acc += tl.where(i[:, None] == i[None, :], tl.sum(x * y, axis=1)[:, None], 0.0)
    return acc


@triton.jit
def unit_lower_inverse(M, C: tl.constexpr, NB: tl.constexpr, PREC_INV: tl.constexpr):
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
def up_tile(uu, rk, km, hh, K: tl.constexpr, R: tl.constexpr, BR: tl.constexpr):
    """U_up of head hh as a [BK, BR] fp32 tile (loaded once per program)."""
    rr = tl.arange(0, BR)
    return tl.load(uu + hh * K * R + rk[:, None] * R + rr[None, :], mask=km[:, None] & (rr[None, :] < R),
                   other=0.0).to(tl.float32)


@triton.jit
def first_split_only(mask, vb, NV: tl.constexpr):
    """mask, kept only in the first of the NV programs of a (sequence, head) (the V split): for the
    stores of what they all compute alike."""
    if NV == 1:
        return mask
    else:
        return mask & ((mask.to(tl.int32) * 0 + vb) == 0)  # vb broadcast first (the interpreter's masks are blocks)


@triton.jit
def ld_acquire(ptr):
    """ld.acquire.gpu of each int32 in ptr, by the thread that holds it (GPU only)."""
    return tl.inline_asm_elementwise("ld.global.acquire.gpu.b32 $0, [$1];", "=r,l", [ptr], dtype=tl.int32,
                                     is_pure=False, pack=1)


@triton.jit
def split_sum(part, xbuf, xflag, slot, vb, rr, NV: tl.constexpr, BR: tl.constexpr):
    """Sum of a [BR] partial over the NV programs of one (sequence, head) (the V split, see sweep_program):
    each writes its partial to slot `slot` of xbuf, counts itself in xflag[slot] (zeroed by the caller,
    one slot per use), waits until all NV have, and adds the NV partials in a fixed order, so every
    program gets the same sum. The NV programs must run at once: the settings split V only where the
    whole grid is resident (one program per multiprocessor)."""
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
        seen = ld_acquire(ptr)
        while tl.min(seen, axis=0) < NV:
            seen = ld_acquire(ptr)
        tot = tl.zeros((BR,), dtype=tl.float32)
        for h in tl.static_range(NV):
            tot += tl.load(base + h * BR + rr, cache_modifier=".cg")  # from L2: written by other SMs
        return tot


@triton.jit
def chunk_content_term(udt, upt, m, xbuf, xflag, slot, vb, rr, HAS_CONTENT: tl.constexpr, NV: tl.constexpr,
               BR: tl.constexpr):
    """The content term c = U_up (U_down m) over key columns (0 without content). With m split over NV
    programs (the V split) each forms its part of U_down m over its value columns, and split_sum adds them."""
    if HAS_CONTENT:
        low = split_sum(tl.sum(udt * m[None, :], axis=1), xbuf, xflag, slot, vb, rr, NV, BR)
        return tl.sum(upt * low[None, :], axis=1)
    else:
        return 0.0


@triton.jit
def content_tiles(ud, uu, rk, km, cv, vm, hh, K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, BR: tl.constexpr,
                   HAS_CONTENT: tl.constexpr):
    """(rr, U_down [BR, BV], U_up [BK, BR]) of head hh in fp32, or zeros without content; held by the sweeps."""
    rr = tl.arange(0, BR)
    if HAS_CONTENT:
        udt = tl.load(ud + hh * R * V + rr[:, None] * V + cv[None, :], mask=(rr[:, None] < R) & vm[None, :],
                      other=0.0).to(tl.float32)
        upt = up_tile(uu, rk, km, hh, K, R, BR)
    else:
        udt = 0.0
        upt = 0.0
    return rr, udt, upt


@triton.jit
def final_mean_grads(dmf, dosf, nh, cv, vm, V: tl.constexpr, BV: tl.constexpr, HAS_DMF: tl.constexpr,
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
def erase_grads(de, k_t, b, rmask, deb, da, tb, tmask, dcc, HAS_CONTENT: tl.constexpr, STORE_DA: tl.constexpr):
    """Stores de (for the post-pass) and the erase-gate logit gradient da = k de b (1 - b) of a
    transposed [BK, C] tile, and returns the content gradient gathered so far plus its row sums.
    Not STORE_DA (the V split: de is this program's part, the post-pass adds the parts and forms da)."""
    tl.store(deb + tb, de.to(deb.dtype.element_ty), mask=tmask)
    dlogit = tl.where(rmask[None, :], (k_t * b * (1.0 - b)) * de, 0.0)
    if STORE_DA:
        tl.store(da + tb, dlogit.to(da.dtype.element_ty), mask=tmask)
    if HAS_CONTENT:
        dcc += tl.sum(dlogit, axis=1)
    return dcc


@triton.jit
def content_chunk_grad(dcc, dmn, complete, udt, upt, dcb, dlowb, cidx, rk, km, rr, K: tl.constexpr,
                        R: tl.constexpr, BK: tl.constexpr, HAS_CONTENT: tl.constexpr,
                        FULL_CONTENT_GRAD: tl.constexpr, xbuf, xflag, vb, NV: tl.constexpr, BR: tl.constexpr):
    """At the first tile of a content chunk (the last one a backward sweep visits): stores the chunk's
    content gradient dc and U_up^T dc (dcb and dlowb hold per-chunk sums on that tile, zero elsewhere),
    and returns (dcc, dmn) for the previous chunk: dcc reset, dmn the gradient of its mean (its m_prev's
    gradient through this chunk's content term, plus dm_f through an incomplete chunk).
    With the V split (NV > 1) dcc is this program's part: dcb (its own slice of NV) gets the part, and
    U_up^T dc is summed over the NV programs (split_sum) before it feeds dm."""
    if HAS_CONTENT:
        tl.store(dcb + cidx * K + rk, dcc, mask=km)
        dlow = split_sum(tl.sum(upt * dcc[:, None], axis=0), xbuf, xflag, cidx, vb, rr, NV, BR)
        tl.store(dlowb + cidx * R + rr, dlow, mask=first_split_only(rr < R, vb, NV))
        if FULL_CONTENT_GRAD:
            dmn = tl.where(complete, 0.0, dmn) + tl.sum(udt * dlow[:, None], axis=0)
        else:
            dmn = tl.where(complete, 0.0, dmn)
        dcc = tl.zeros((BK,), dtype=tl.float32)
    else:
        dmn = tl.where(complete, 0.0, dmn)
    return dcc, dmn


@triton.jit
def erase_gate(a, c, tok, rmask, rk, km, hh, H, K: tl.constexpr, HAS_CONTENT: tl.constexpr):
    """b = sigmoid(a + c), c the chunk's content term over key columns (see chunk_content_term)."""
    a_t = load_tile(a + hh * K, tok, rmask, rk, km, H * K)
    if HAS_CONTENT:
        a_t = a_t + c[None, :]
    return tl.sigmoid(a_t)
