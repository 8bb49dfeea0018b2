"""Small v2 kernels that finish the backward after the sweeps (see docs/kernels.md, "v2").

- ``carve_v2_dvw_kernel``: dv = w dR and dw = sum_v v dR for a scalar write gate (the transposed
  backward sweep writes dR, its layout spreads V over the warps).
- ``carve_v2_du_kernel``: the gradients of the content maps, summed over every content chunk c of every
  sequence: dU_up = sum_c dc_c (U_down m_c)^T and dU_down = sum_c (U_up^T dc_c) m_c^T, from the per-chunk
  dc and U_up^T dc the sweep saved (zero on the other tiles) and the forward's m. One program per
  (head, which), looping over the chunks in order: deterministic, no atomics.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def carve_v2_dvw_kernel(dR, v, w, dv, dw, rows, V: tl.constexpr, BV: tl.constexpr, BLOCK: tl.constexpr):
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
def carve_v2_du_kernel(ud, mbuf, dcb, dlowb, duu, dud, n_slots, H, nv_stride, rows_per_program,
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
def carve_v2_du_sum_kernel(parts_up, parts_down, duu, dud, n_parts, H, N_UP: tl.constexpr, N_DOWN: tl.constexpr,
                           BLOCK: tl.constexpr):
    """Adds carve_v2_du_kernel's partial sums in order (deterministic) and writes dU_up [H, K, R] and
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


__all__ = ["carve_v2_dvw_kernel", "carve_v2_du_kernel", "carve_v2_du_sum_kernel", "triton"]
