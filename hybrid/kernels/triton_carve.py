"""Triton backend of the CARVE operator: ``carve_triton`` (autograd) and ``carve_decode_triton``.

Kernels live in :mod:`hybrid.kernels.triton_carve_kernels`; the design is described there and in
docs/kernels.md. This module validates inputs, lays out the per-chunk buffers, launches the forward and
backward sweeps and reduces the small per-chunk content gradients with torch.
"""

from __future__ import annotations

import os

import torch
import triton

from .chunked import carve_chunked
from .inputs import CarveInputError, CarveState, default_scale, validate
from .triton_carve_kernels import carve_bwd_kernel, carve_decode_kernel, carve_fwd_kernel

SUPPORTED_CHUNKS = (16, 32, 64)
POISON = False  # tests set this: kernel outputs start as NaN, so an unwritten element shows up


def _empty(*shape, device, dtype):
    if POISON:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(*shape, device=device, dtype=dtype)
BKS = 16  # key channels per slice (the pairwise diagonal tile is [C/16, 16, 16, BKS])


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _precision() -> str:
    """tl.dot precision for the large products (the triangular inverse always uses ieee fp32)."""
    return os.environ.get("HYBRID_CARVE_DOT_PRECISION", "tf32")


def _num_warps() -> int:
    return int(os.environ.get("HYBRID_CARVE_NUM_WARPS", "4"))


def _v_split(N: int, H: int, V: int, content: bool, device) -> int:
    """Programs per (sequence, head) along V. Only without content (value tiles are then independent)."""
    forced = os.environ.get("HYBRID_CARVE_V_SPLIT")
    if forced is not None:
        nv = int(forced)
    elif content or device.type != "cuda":
        nv = 1
    else:
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        nv = 1
        while N * H * nv < sms and V // (nv * 2) >= 32:
            nv *= 2
    if content:
        nv = 1
    return max(1, min(nv, triton.cdiv(V, 16)))


class _Meta:
    pass


def _layout(shp, q, cu_seqlens, initial_state, C):
    dev = q.device
    if cu_seqlens is None:
        starts = torch.arange(shp.B, device=dev, dtype=torch.int64) * shp.T
        lens = torch.full((shp.B,), shp.T, device=dev, dtype=torch.int64)
    else:
        cs = cu_seqlens.to(device=dev, dtype=torch.int64)
        starts, lens = cs[:-1].contiguous(), (cs[1:] - cs[:-1]).contiguous()
    if initial_state is not None:
        pos = initial_state.pos.to(device=dev, dtype=torch.int64).contiguous()
    else:
        pos = torch.zeros_like(lens)
    ns = (pos + lens + C - 1) // C
    sizes = ns + 1
    offs = torch.cumsum(sizes, 0) - sizes
    total = int(sizes.sum().item())
    return starts, lens, pos, ns, offs.contiguous(), total


class CarveTritonFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, a, w, u_down, u_up, S0, m0, os0, pos0, meta):
        N, H, K, V, R, C = meta.N, meta.H, meta.K, meta.V, meta.R, meta.C
        dev = q.device
        TT = q.shape[0] * q.shape[1]
        qc, kc, vc, gc, ac, wc = (x.contiguous() for x in (q, k, v, g, a, w))
        content = u_down is not None
        udc = u_down.contiguous().float() if content else qc.new_zeros(1, dtype=torch.float32)
        uuc = u_up.contiguous().float() if content else qc.new_zeros(1, dtype=torch.float32)
        o = _empty(q.shape[0], q.shape[1], H, V, device=dev, dtype=q.dtype)
        total = meta.total
        hbuf = _empty(total, H, K, V, device=dev, dtype=torch.float32)
        mbuf = _empty(total, H, V, device=dev, dtype=torch.float32)
        abuf = _empty(total, H, C, C, device=dev, dtype=torch.float32)
        osf = _empty(N, H, V, device=dev, dtype=torch.float32)
        has_init = S0 is not None
        dummy = torch.zeros(1, device=dev, dtype=torch.float32)
        nv = meta.nv
        vpp = triton.cdiv(triton.cdiv(V, nv), 16) * 16
        nv = triton.cdiv(V, vpp)
        meta.nv_eff, meta.vpp = nv, vpp
        BV = min(64, max(16, triton.next_power_of_2(vpp)))
        meta.BV = BV
        carve_fwd_kernel[(N, H, nv)](
            qc, kc, vc, gc, ac, wc, udc, uuc, o,
            S0.contiguous() if has_init else dummy, m0.contiguous() if has_init else dummy,
            os0.contiguous() if has_init else dummy, pos0 if has_init else meta.pos,
            hbuf, mbuf, abuf, osf,
            meta.starts, meta.lens, meta.offs,
            meta.scale, H, vpp,
            K=K, V=V, R=max(R, 1), C=C, NB=C // 16, BKS=BKS, BV=BV,
            BVF=max(16, triton.next_power_of_2(V)), BR=max(2, triton.next_power_of_2(max(R, 1))),
            HAS_INIT=has_init, HAS_CONTENT=content, VEC_W=meta.vec_w, PREC=meta.prec,
            num_warps=meta.num_warps,
        )
        fidx = meta.offs + meta.ns
        S_f = hbuf.index_select(0, fidx)
        m_f = mbuf.index_select(0, fidx)
        ctx.save_for_backward(qc, kc, vc, gc, ac, wc, udc, uuc, hbuf, mbuf, abuf,
                              pos0 if has_init else meta.pos)
        ctx.meta = meta
        ctx.has_init = has_init
        ctx.content = content
        ctx.TT = TT
        return o, S_f, m_f, osf

    @staticmethod
    def backward(ctx, do, dS_f, dm_f, dos_f):
        qc, kc, vc, gc, ac, wc, udc, uuc, hbuf, mbuf, abuf, pos = ctx.saved_tensors
        meta = ctx.meta
        N, H, K, V, R, C = meta.N, meta.H, meta.K, meta.V, meta.R, meta.C
        dev = qc.device
        TT = ctx.TT
        nv = meta.nv_eff
        content = ctx.content
        if do is None:
            do = torch.zeros(qc.shape[0], qc.shape[1], H, V, device=dev, dtype=qc.dtype)
        do = do.contiguous()
        f32 = torch.float32
        dq = _empty(TT, H, nv, K, device=dev, dtype=f32)
        dk = _empty(TT, H, nv, K, device=dev, dtype=f32)
        dg = _empty(TT, H, nv, K, device=dev, dtype=f32)
        da = _empty(TT, H, nv, K, device=dev, dtype=f32)
        dv = _empty(*vc.shape, device=dev, dtype=vc.dtype)
        if meta.vec_w:
            dw = _empty(*wc.shape, device=dev, dtype=wc.dtype)
        else:
            dw = _empty(TT, H, nv, device=dev, dtype=f32)
        dsb = _empty(N, H, 2, K, V, device=dev, dtype=f32)
        scr = _empty(N, H, 3, C, V, device=dev, dtype=f32)
        dmbuf = torch.zeros(meta.total, H, V, device=dev, dtype=f32)
        fidx = meta.offs + meta.ns
        if dm_f is not None:
            dmbuf.index_copy_(0, fidx, dm_f.float())
        if content:
            dcbuf = torch.zeros(meta.total, H, K, device=dev, dtype=f32)
            dlowbuf = torch.zeros(meta.total, H, R, device=dev, dtype=f32)
        else:
            dcbuf = dlowbuf = torch.zeros(1, device=dev, dtype=f32)
        dos0 = _empty(N, H, V, device=dev, dtype=f32)
        dummy = torch.zeros(1, device=dev, dtype=f32)
        carve_bwd_kernel[(N, H, nv)](
            qc, kc, vc, gc, ac, wc, udc, uuc, do,
            dq, dk, dv, dg, da, dw,
            pos, hbuf, mbuf, abuf,
            dS_f.contiguous().float() if dS_f is not None else dummy,
            dos_f.contiguous().float() if dos_f is not None else dummy,
            dsb, scr, dmbuf, dcbuf, dlowbuf, dos0,
            meta.starts, meta.lens, meta.offs,
            meta.scale, H, meta.vpp, nv,
            K=K, V=V, R=max(R, 1), C=C, NB=C // 16, BKS=BKS, BV=meta.BV,
            BVF=max(16, triton.next_power_of_2(V)), BR=max(2, triton.next_power_of_2(max(R, 1))),
            HAS_INIT=ctx.has_init, HAS_CONTENT=content, FULL_CONTENT_GRAD=meta.content_grad == "full",
            VEC_W=meta.vec_w, HAS_DHT=dS_f is not None, HAS_DOSF=dos_f is not None, PREC=meta.prec,
            num_warps=meta.num_warps,
        )
        shp4 = qc.shape
        red = lambda x: (x.sum(2) if nv > 1 else x[:, :, 0]).view(shp4).to(qc.dtype)
        dq, dk, dg, da = red(dq), red(dk), red(dg), red(da)
        if meta.vec_w:
            dw = dw.view(wc.shape)
        else:
            dw = dw.sum(2).view(wc.shape).to(wc.dtype)
        dud = duu = None
        if content:
            low = torch.einsum("hrv,chv->chr", udc, mbuf)
            duu = torch.einsum("chk,chr->hkr", dcbuf, low).to(meta.uu_dtype)
            dud = torch.einsum("chr,chv->hrv", dlowbuf, mbuf).to(meta.ud_dtype)
        dS0 = dm0 = dos0_out = None
        if ctx.has_init:
            dS0 = dsb[:, :, 0].clone()
            dm0 = dmbuf.index_select(0, meta.offs)
            dos0_out = dos0
        return dq, dk, dv, dg, da, dw, dud, duu, dS0, dm0, dos0_out, None, None


def carve_triton(q, k, v, g, a, w, u_down=None, u_up=None, *, scale=None, chunk_size=64, content_grad="full",
                 initial_state: CarveState | None = None, output_final_state=False, cu_seqlens=None):
    """CARVE with the Triton kernels. Same contract as :func:`hybrid.kernels.carve_chunked`."""
    shp = validate(q, k, v, g, a, w, u_down, u_up, chunk_size=chunk_size, content_grad=content_grad,
                   initial_state=initial_state, cu_seqlens=cu_seqlens)
    if q.dtype == torch.float64:  # the kernels compute in fp32; float64 is the oracles' dtype
        return carve_chunked(q, k, v, g, a, w, u_down, u_up, scale=scale, chunk_size=chunk_size,
                             content_grad=content_grad, initial_state=initial_state,
                             output_final_state=output_final_state, cu_seqlens=cu_seqlens)
    if chunk_size not in SUPPORTED_CHUNKS:
        raise CarveInputError(f"the Triton CARVE kernels support chunk_size in {SUPPORTED_CHUNKS}, got {chunk_size}")
    dt = q.dtype
    k, v, g, a, w = (x.to(dt) for x in (k, v, g, a, w))
    C = chunk_size
    starts, lens, pos, ns, offs, total = _layout(shp, q, cu_seqlens, initial_state, C)
    meta = _Meta()
    meta.N, meta.H, meta.K, meta.V, meta.R, meta.C = shp.n_seq, shp.H, shp.K, shp.V, shp.r, C
    meta.starts, meta.lens, meta.pos, meta.ns, meta.offs, meta.total = starts, lens, pos, ns, offs, total
    meta.scale = default_scale(shp.K, scale)
    meta.vec_w = shp.vector_w
    meta.content_grad = content_grad
    meta.prec = "ieee" if _interpreting() else _precision()
    meta.num_warps = _num_warps()
    meta.nv = _v_split(shp.n_seq, shp.H, shp.V, u_down is not None, q.device)
    meta.ud_dtype = u_down.dtype if u_down is not None else None
    meta.uu_dtype = u_up.dtype if u_up is not None else None
    if initial_state is not None:
        S0 = initial_state.S.float()
        m0 = initial_state.m_prev.float()
        os0 = initial_state.o_sum.float()
        pos0 = pos
    else:
        S0 = m0 = os0 = pos0 = None
    o, S_f, m_f, os_f = CarveTritonFn.apply(q, k, v, g, a, w, u_down, u_up, S0, m0, os0, pos0, meta)
    final = None
    if output_final_state:
        final = CarveState(S_f, m_f, os_f, (pos + lens) % C)
    return o, final


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
    o = _empty(N, H, V, device=dev, dtype=q_t.dtype)
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
