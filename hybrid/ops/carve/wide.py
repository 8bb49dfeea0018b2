"""The wide path of the Triton CARVE operator: head dims above 128, and fp32 operands on tiles above
128 x 64 (fp16/fp32 inputs at K = V = 128), where the chunk kernels' register-resident state or their
shared memory would not fit.

One program per (sequence, head) -- or, without content, per (sequence, head, value slice) -- loops over
the chunks of its sequence (wide_kernels.py). The K x V fp32 state is streamed through a per-chunk
buffer in global memory (it stays in L2), which doubles as the chunk-start states the backward needs,
so K and V up to 256 fit. The small per-chunk content gradients are reduced with torch.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import triton

from .inputs import CarveState, default_scale, validate
from .layout import empty, sequence_layout
from .settings import CarveSettings
from .wide_kernels import carve_wide_bwd_kernel, carve_wide_fwd_kernel

BKS = 16  # key channels per slice of the couplings (the pairwise diagonal tile is [C/16, 16, 16, BKS])


class CarveWideFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, a, w, u_down, u_up, S0, m0, os0, pos0, meta):
        N, H, K, V, R, C = meta.N, meta.H, meta.K, meta.V, meta.R, meta.C
        dev = q.device
        TT = q.shape[0] * q.shape[1]
        qc, kc, vc, gc, ac, wc = (x.contiguous() for x in (q, k, v, g, a, w))
        content = u_down is not None
        udc = u_down.contiguous().float() if content else qc.new_zeros(1, dtype=torch.float32)
        uuc = u_up.contiguous().float() if content else qc.new_zeros(1, dtype=torch.float32)
        o = empty(q.shape[0], q.shape[1], H, V, device=dev, dtype=q.dtype)
        total = meta.total
        hbuf = empty(total, H, K, V, device=dev, dtype=torch.float32)
        mbuf = empty(total, H, V, device=dev, dtype=torch.float32)
        abuf = empty(total, H, C, C, device=dev, dtype=torch.float32)
        osf = empty(N, H, V, device=dev, dtype=torch.float32)
        has_init = S0 is not None
        dummy = torch.zeros(1, device=dev, dtype=torch.float32)
        nv = meta.nv
        vpp = triton.cdiv(triton.cdiv(V, nv), 16) * 16
        nv = triton.cdiv(V, vpp)
        meta.nv_eff, meta.vpp = nv, vpp
        BV = min(64, max(16, triton.next_power_of_2(vpp)))
        meta.BV = BV
        carve_wide_fwd_kernel[(N, H, nv)](
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
        dq = empty(TT, H, nv, K, device=dev, dtype=f32)
        dk = empty(TT, H, nv, K, device=dev, dtype=f32)
        dg = empty(TT, H, nv, K, device=dev, dtype=f32)
        da = empty(TT, H, nv, K, device=dev, dtype=f32)
        dv = empty(*vc.shape, device=dev, dtype=vc.dtype)
        if meta.vec_w:
            dw = empty(*wc.shape, device=dev, dtype=wc.dtype)
        else:
            dw = empty(TT, H, nv, device=dev, dtype=f32)
        dsb = empty(N, H, 2, K, V, device=dev, dtype=f32)
        scr = empty(N, H, 3, C, V, device=dev, dtype=f32)
        dmbuf = torch.zeros(meta.total, H, V, device=dev, dtype=f32)
        fidx = meta.offs + meta.ns
        if dm_f is not None:
            dmbuf.index_copy_(0, fidx, dm_f.float())
        if content:
            dcbuf = torch.zeros(meta.total, H, K, device=dev, dtype=f32)
            dlowbuf = torch.zeros(meta.total, H, R, device=dev, dtype=f32)
        else:
            dcbuf = dlowbuf = torch.zeros(1, device=dev, dtype=f32)
        dos0 = empty(N, H, V, device=dev, dtype=f32)
        dummy = torch.zeros(1, device=dev, dtype=f32)
        carve_wide_bwd_kernel[(N, H, nv)](
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



def carve_wide(q, k, v, g, a, w, u_down=None, u_up=None, *, settings: CarveSettings, scale=None, chunk_size=64,
               content_grad="full", initial_state: CarveState | None = None, output_final_state=False,
               cu_seqlens=None):
    """CARVE with the wide kernels (fp16/bf16/fp32 inputs). Same contract as :func:`hybrid.ops.carve.carve`."""
    shp = validate(q, k, v, g, a, w, u_down, u_up, chunk_size=chunk_size, content_grad=content_grad,
                   initial_state=initial_state, cu_seqlens=cu_seqlens)
    dt = q.dtype
    k, v, g, a, w = (x.to(dt) for x in (k, v, g, a, w))
    C = chunk_size
    starts, lens, pos, ns, offs, total = sequence_layout(shp, q, cu_seqlens, initial_state, C)
    meta = SimpleNamespace(
        N=shp.n_seq, H=shp.H, K=shp.K, V=shp.V, R=shp.r, C=C, starts=starts, lens=lens, pos=pos, ns=ns, offs=offs,
        total=total, scale=default_scale(shp.K, scale), vec_w=shp.vector_w, content_grad=content_grad,
        prec=settings.precision, num_warps=settings.sweep_warps, nv=settings.value_split if u_down is None else 1,
        ud_dtype=u_down.dtype if u_down is not None else None, uu_dtype=u_up.dtype if u_up is not None else None)
    if initial_state is not None:
        S0 = initial_state.S.float()
        m0 = initial_state.m_prev.float()
        os0 = initial_state.o_sum.float()
        pos0 = pos
    else:
        S0 = m0 = os0 = pos0 = None
    o, S_f, m_f, os_f = CarveWideFn.apply(q, k, v, g, a, w, u_down, u_up, S0, m0, os0, pos0, meta)
    final = None
    if output_final_state:
        final = CarveState(S_f, m_f, os_f, (pos + lens) % C)
    return o, final
