"""One CARVE token per sequence from a carried state: the decode step of generation.

``carve_decode_kernel`` (grid [N, H, V / BV]) updates a [K, BV] slice of the fp32 state and writes the
token's output and the new chunk bookkeeping (m_prev, o_sum, pos). One token needs no chunk algebra:
it is the recurrence of hybrid/ops/carve/reference.py (``carve_step``) for one step, so the kernel
reads the state, decays and erases it, writes the new value and reads the output out of place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .inputs import CarveState, default_scale
from .layout import empty


@triton.jit
def carve_decode_kernel(
    q, k, v, g, a, w, ud, uu, o,
    S, m_prev, o_sum, pos,
    S_new, m_new, o_new,
    scale,
    H,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, C: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BVF: tl.constexpr, BR: tl.constexpr,
    HAS_CONTENT: tl.constexpr, VEC_W: tl.constexpr,
):
    n = tl.program_id(0)
    hh = tl.program_id(1)
    pv = tl.program_id(2)
    nh = (n * H + hh).to(tl.int64)
    rk = tl.arange(0, BK)
    km = rk < K
    cv = pv * BV + tl.arange(0, BV)
    vm = cv < V
    qv = tl.load(q + nh * K + rk, mask=km, other=0.0).to(tl.float32)
    kv = tl.load(k + nh * K + rk, mask=km, other=0.0).to(tl.float32)
    gv = tl.load(g + nh * K + rk, mask=km, other=0.0).to(tl.float32)
    av = tl.load(a + nh * K + rk, mask=km, other=0.0).to(tl.float32)
    if HAS_CONTENT:  # the content term U_up (U_down m_prev), over all value columns
        vv = tl.arange(0, BVF)
        rr = tl.arange(0, BR)
        mfull = tl.load(m_prev + nh * V + vv, mask=vv < V, other=0.0)
        udt = tl.load(ud + hh * R * V + rr[:, None] * V + vv[None, :],
                      mask=(rr[:, None] < R) & (vv[None, :] < V), other=0.0).to(tl.float32)
        low = tl.sum(udt * mfull[None, :], axis=1)
        up = tl.load(uu + hh * K * R + rk[:, None] * R + rr[None, :],
                     mask=km[:, None] & (rr[None, :] < R), other=0.0).to(tl.float32)
        av += tl.sum(up * low[None, :], axis=1)
    b = tl.sigmoid(av)
    smask = km[:, None] & vm[None, :]
    s = tl.load(S + nh * K * V + rk[:, None] * V + cv[None, :], mask=smask, other=0.0)
    s = tl.exp(gv)[:, None] * s
    rd = tl.sum(s * (b * kv)[:, None], axis=0)
    vv = tl.load(v + nh * V + cv, mask=vm, other=0.0).to(tl.float32)
    if VEC_W:
        ww = tl.load(w + nh * V + cv, mask=vm, other=0.0).to(tl.float32)
    else:
        ww = tl.load(w + nh).to(tl.float32)
    s = s + kv[:, None] * (ww * vv - rd)[None, :]
    out = tl.sum(s * (scale * qv)[:, None], axis=0)
    tl.store(o + nh * V + cv, out.to(o.dtype.element_ty), mask=vm)
    tl.store(S_new + nh * K * V + rk[:, None] * V + cv[None, :], s, mask=smask)
    osum = tl.load(o_sum + nh * V + cv, mask=vm, other=0.0) + out
    pp = tl.load(pos + n) + 1
    mp = tl.load(m_prev + nh * V + cv, mask=vm, other=0.0)
    full = pp == C
    tl.store(m_new + nh * V + cv, tl.where(full, osum / C, mp), mask=vm)
    tl.store(o_new + nh * V + cv, tl.where(full, 0.0, osum), mask=vm)


def carve_decode_triton(q_t, k_t, v_t, g_t, a_t, w_t, u_down, u_up, state: CarveState, *, scale=None,
                        chunk_size=64):
    """One token per sequence from ``state``. Inputs [N, H, K] / [N, H, V]; w_t [N, H] or [N, H, V].

    Returns (o_t in the input dtype, new CarveState); the state is fp32 and updated out of place."""
    N, H, K = q_t.shape
    V = v_t.shape[-1]
    content = u_down is not None
    R = u_down.shape[1] if content else 1
    sc = default_scale(K, scale)
    dev = q_t.device
    o = empty(N, H, V, device=dev, dtype=q_t.dtype)
    S = state.S.float().contiguous()
    mp = state.m_prev.float().contiguous()
    osm = state.o_sum.float().contiguous()
    pos = state.pos.to(device=dev, dtype=torch.int64).contiguous()
    S_new, m_new, o_new = torch.empty_like(S), torch.empty_like(mp), torch.empty_like(osm)
    BV = min(32, max(16, triton.next_power_of_2(V)))
    dummy = torch.zeros(1, device=dev, dtype=torch.float32)
    carve_decode_kernel[(N, H, triton.cdiv(V, BV))](
        q_t.contiguous(), k_t.contiguous(), v_t.contiguous(), g_t.contiguous(), a_t.contiguous(),
        w_t.contiguous(), u_down.contiguous() if content else dummy, u_up.contiguous() if content else dummy, o,
        S, mp, osm, pos, S_new, m_new, o_new,
        sc, H,
        K=K, V=V, R=R, C=chunk_size, BK=max(16, triton.next_power_of_2(K)), BV=BV,
        BVF=max(16, triton.next_power_of_2(V)), BR=max(2, triton.next_power_of_2(R)),
        HAS_CONTENT=content, VEC_W=w_t.dim() == 3,
        num_warps=4,
    )
    return o, CarveState(S_new, m_new, o_new, (pos + 1) % chunk_size)
