"""The Triton chunk path of CARVE: ``carve_triton`` (autograd) over the chunk kernels.

Forward: ``carve_chunk_prep_kernel`` then ``carve_chunk_fwd_kernel`` (chunk_fwd.py). Backward:
``carve_chunk_bprep_kernel`` and the reverse sweep ``carve_chunk_bwd_kernel`` (chunk_bwd.py), then
``carve_chunk_post_kernel``, ``carve_chunk_dvw_kernel`` (scalar write gate) and, with content,
``carve_chunk_du_kernel`` + ``carve_chunk_du_sum_kernel`` (chunk_grads.py). How a call runs (tile
size, precisions, V split, warps) is one ``CarveSettings`` (settings.py), chosen from the shape, dtype
and device; heads above 128 and fp32 operands on large tiles run the wide kernels (wide.py) instead.
float64 inputs (the oracles' dtype) run the chunked PyTorch path.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import triton

from .chunk_bwd import carve_chunk_bprep_kernel, carve_chunk_bwd_kernel
from .chunk_fwd import carve_chunk_fwd_kernel, carve_chunk_prep_kernel
from .chunk_grads import (
    carve_chunk_du_kernel,
    carve_chunk_du_sum_kernel,
    carve_chunk_dvw_kernel,
    carve_chunk_post_kernel,
)
from .chunked import carve_chunked
from .inputs import CarveInputError, CarveState, default_scale, validate
from .layout import block, empty, interpreting, tile_grid
from .settings import CarveSettings, check_value_split, choose_settings
from .wide import carve_wide


def _exchange_buffers(plan, content: bool, dev):
    """(xbuf, xflag) of the V split's exchanges (split_sum): a [NV, BR] fp32 slot and a zeroed int32
    counter per (tile, head), one use each per launch; 1-element dummies without the split or content."""
    if plan.nv == 1 or not content:
        return torch.zeros(1, device=dev, dtype=torch.float32), torch.zeros(1, device=dev, dtype=torch.int32)
    return (torch.empty(plan.total * plan.H * plan.nv * plan.BR, device=dev, dtype=torch.float32),
            torch.zeros(plan.total * plan.H, device=dev, dtype=torch.int32))


def _caps(cap: int) -> dict:
    return {"maxnreg": cap} if cap > 0 else {}


class CarveChunkFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, a, w, u_down, u_up, S0, m0, os0, plan):
        st = plan.settings
        N, H, K, V, R, C = plan.N, plan.H, plan.K, plan.V, plan.R, plan.C
        dev = q.device
        f32 = torch.float32
        qc, kc, vc, gc, ac, wc = (x.contiguous() for x in (q, k, v, g, a, w))
        content = u_down is not None
        # (the kernels read U_down and U_up in their own dtype and compute in fp32)
        udc = u_down.contiguous() if content else torch.zeros(1, device=dev, dtype=f32)
        uuc = u_up.contiguous() if content else torch.zeros(1, device=dev, dtype=f32)
        TT = q.shape[0] * q.shape[1]
        has_init = S0 is not None
        dummy = torch.zeros(1, device=dev, dtype=f32)
        Gb = empty(TT, H, K, device=dev, dtype=f32)
        # P and A enter their products in the operand dtype only: kept in it (bf16 with LOWP), no loss
        cc_dtype = torch.bfloat16 if st.low_precision else f32
        Pb = empty(plan.total, H, C, C, device=dev, dtype=cc_dtype)
        o = empty(q.shape[0], q.shape[1], H, V, device=dev, dtype=q.dtype)
        ubuf = empty(TT, H, V, device=dev, dtype=cc_dtype)  # U in the operand dtype, for the backward
        hbuf = empty(plan.total, H, K, V, device=dev, dtype=st.state_dtype)  # chunk-start states
        S_f = empty(N, H, K, V, device=dev, dtype=f32)
        mbuf = empty(plan.total, H, V, device=dev, dtype=f32)
        abuf = empty(plan.total, H, C, C, device=dev, dtype=cc_dtype)
        # per tile, the largest |q| and |k| (scales of the fp16 decayed products)
        qks = empty(plan.total, H, 2, device=dev, dtype=f32) if st.fp16_decayed else dummy
        osf = empty(N, H, V, device=dev, dtype=f32)
        gbuf = empty(TT, H, K, device=dev, dtype=st.gate_dtype)  # the erase gate b, for the backward
        common = dict(K=K, C=C, NB=C // 16, LOG2C=C.bit_length() - 1, BK=plan.BK, HAS_INIT=has_init,
                      DEC=st.fp16_decayed)
        if plan.n_chunks > 0:
            carve_chunk_prep_kernel[(plan.n_chunks, H)](
                qc, kc, gc, Gb, Pb, qks, plan.starts, plan.lens, plan.offs, plan.pos, plan.cseq, plan.cj, H,
                PREC=st.precision, num_warps=st.prep_warps, num_stages=st.num_stages, **_caps(st.prep_maxnreg),
                **common)
        xbuf, xflag = _exchange_buffers(plan, content, dev)
        carve_chunk_fwd_kernel[(N * plan.nv, H)](
            qc, kc, vc, ac, wc, udc, uuc, o, ubuf, Gb, Pb, qks,
            S0.contiguous() if has_init else dummy, m0.contiguous() if has_init else dummy,
            os0.contiguous() if has_init else dummy, plan.pos,
            hbuf, mbuf, abuf, gbuf, osf, S_f, xbuf, xflag, plan.starts, plan.lens, plan.offs, plan.scale, H,
            V=V, R=max(R, 1), BV=plan.BV // plan.nv, BR=plan.BR, HAS_CONTENT=content, VEC_W=plan.vec_w, SUB=plan.sub,
            LOWP=st.low_precision, PREC=st.precision, PREC_INV=st.inverse_precision, NV=plan.nv,
            num_warps=st.sweep_warps, num_stages=st.num_stages, **common)
        m_f = mbuf.index_select(0, plan.offs + plan.ns)
        ctx.save_for_backward(qc, kc, vc, wc, udc, uuc, Gb, Pb, hbuf, mbuf, abuf, ubuf, qks, gbuf)
        ctx.plan = plan
        ctx.has_init = has_init
        ctx.content = content
        ctx.a_dtype = a.dtype
        ctx.g_dtype = g.dtype
        return o, S_f, m_f, osf

    @staticmethod
    def backward(ctx, do, dS_f, dm_f, dos_f):
        qc, kc, vc, wc, udc, uuc, Gb, Pb, hbuf, mbuf, abuf, ubuf, qks, gbuf = ctx.saved_tensors
        plan = ctx.plan
        st = plan.settings
        N, H, K, V, R, C = plan.N, plan.H, plan.K, plan.V, plan.R, plan.C
        dev = qc.device
        f32 = torch.float32
        content = ctx.content
        TT = qc.shape[0] * qc.shape[1]
        if do is None:
            do = torch.zeros(qc.shape[0], qc.shape[1], H, V, device=dev, dtype=qc.dtype)
        do = do.contiguous()
        dummy = torch.zeros(1, device=dev, dtype=f32)
        nv = plan.nv  # the V split: the sweep writes nv parts of de, dM and dc (added by the post-pass / here)
        deb = empty(nv, TT, H, K, device=dev, dtype=f32)  # de, for the post-pass
        dsb = empty(plan.total, H, K, V, device=dev, dtype=ubuf.dtype)  # dS at each tile's end (operand dtype)
        corrb = empty(plan.total, H, V, device=dev, dtype=f32)
        dMb = empty(nv, plan.total, H, C, C, device=dev, dtype=f32)
        da = empty(*qc.shape, device=dev, dtype=ctx.a_dtype)
        if plan.vec_w:
            dv = empty(*vc.shape, device=dev, dtype=vc.dtype)
            dw = empty(*wc.shape, device=dev, dtype=wc.dtype)
        else:  # the sweep writes dR (fp32) into dv, and dv, dw are formed from it below
            dv = empty(*vc.shape, device=dev, dtype=f32)
            dw = dummy
        if content:  # per-chunk sums on each content chunk's first tile, zero elsewhere: one zeroed buffer
            n_dc = nv * plan.total * H * K
            zb = torch.zeros(n_dc + plan.total * H * R, device=dev, dtype=f32)
            dcb = zb[:n_dc].view(nv, plan.total, H, K)
            dlowb = zb[n_dc:].view(plan.total, H, R)
        else:
            dcb = dlowb = dummy
        dS0 = empty(N, H, K, V, device=dev, dtype=f32)
        dm0 = empty(N, H, V, device=dev, dtype=f32)
        dos0 = empty(N, H, V, device=dev, dtype=f32)
        common = dict(K=K, V=V, R=max(R, 1), C=C, NB=C // 16, LOG2C=C.bit_length() - 1, BK=plan.BK, BV=plan.BV,
                      BR=plan.BR, DEC=st.fp16_decayed, HAS_INIT=ctx.has_init, HAS_CONTENT=content)
        # the dS-free parts of the backward, in parallel over tiles (see carve_chunk_bprep_kernel)
        w1b = empty(TT, H, K, device=dev, dtype=ubuf.dtype)
        dr0b = empty(TT, H, V, device=dev, dtype=f32)
        a2b = empty(TT, H, device=dev, dtype=f32)
        if plan.n_chunks > 0:
            carve_chunk_bprep_kernel[(plan.n_chunks, H)](
                kc, do, Gb, Pb, abuf, w1b, dr0b, a2b,
                plan.starts, plan.lens, plan.offs, plan.pos, plan.cseq, plan.cj, plan.scale, H,
                K=K, V=V, C=C, BK=plan.BK, BV=plan.BV, HAS_INIT=ctx.has_init, LOWP=st.low_precision,
                PREC=st.precision, num_warps=st.bprep_warps, num_stages=st.num_stages, **_caps(st.par_maxnreg))
        finals = (dS_f.contiguous().float() if dS_f is not None else dummy,
                  dm_f.contiguous().float() if dm_f is not None else dummy,
                  dos_f.contiguous().float() if dos_f is not None else dummy)
        sweep = dict(common, BV=plan.BV // nv)
        xbuf, xflag = _exchange_buffers(plan, content, dev)
        carve_chunk_bwd_kernel[(N * nv, H)](
            qc, kc, vc, gbuf, wc, udc, uuc, do, Gb, ubuf, w1b, dr0b, a2b, qks, plan.pos, hbuf, *finals,
            corrb, deb, dsb, da, dv, dw, dMb, dcb, dlowb, dS0, dm0, dos0, xbuf, xflag,
            plan.starts, plan.lens, plan.offs, plan.scale, H, deb[0].numel(), dMb[0].numel(),
            dcb[0].numel() if content else 0,
            FULL_CONTENT_GRAD=plan.content_grad == "full", VEC_W=plan.vec_w, HAS_DHT=dS_f is not None,
            HAS_DMF=dm_f is not None, HAS_DOSF=dos_f is not None, SUB=plan.sub, LOWP=st.low_precision,
            PREC=st.precision, NV=nv, num_warps=st.sweep_warps, num_stages=st.num_stages, **sweep)
        if not plan.vec_w:
            dR = dv
            dv = empty(*vc.shape, device=dev, dtype=vc.dtype)
            dw = empty(*wc.shape, device=dev, dtype=wc.dtype)
            rows = TT * H
            carve_chunk_dvw_kernel[(triton.cdiv(rows, 64),)](dR, vc, wc, dv, dw, rows, V=V, BV=plan.BV, BLOCK=64,
                                                             num_warps=4)
            del dR
        dq = empty(*qc.shape, device=dev, dtype=qc.dtype)
        dk = empty(*kc.shape, device=dev, dtype=kc.dtype)
        dg = empty(*qc.shape, device=dev, dtype=ctx.g_dtype)
        if plan.n_chunks > 0:
            carve_chunk_post_kernel[(plan.n_chunks, H, triton.cdiv(K, plan.bkp))](
                qc, kc, gbuf, do, Gb, ubuf, hbuf, corrb, dMb, deb, dsb, qks, dq, dk, dg, da,
                plan.starts, plan.lens, plan.offs, plan.pos, plan.cseq, plan.cj, plan.scale, H, deb[0].numel(),
                dMb[0].numel(), BKP=plan.bkp, NV=nv, LOWP=st.low_precision, PREC=st.precision,
                num_warps=st.post_warps, num_stages=st.num_stages, **_caps(st.par_maxnreg), **common)
        dud = duu = None
        if content:  # dU_up = sum_c dc (U_down m)^T, dU_down = sum_c (U_up^T dc) m^T (carve_chunk_du_kernel)
            per = st.du_slots
            parts = triton.cdiv(plan.total, per)
            duu = empty(parts, H, K, R, device=dev, dtype=f32)
            dud = empty(parts, H, R, V, device=dev, dtype=f32)
            # pipelined in 3 stages without the V split (152 KB of shared memory at K = V = 128); the
            # split's 4 parts of dc in 3 stages would need 344 KB, more than an H200 block has
            carve_chunk_du_kernel[(H, 2, parts)](udc, mbuf, dcb, dlowb, duu, dud, plan.total, H, dcb[0].numel(), per,
                                                 K=K, V=V, R=R, BK=plan.BK, BV=plan.BV, BR=max(16, plan.BR), NV=nv,
                                                 BC=64, PREC="ieee" if interpreting() else "tf32x3", num_warps=4,
                                                 num_stages=3 if nv == 1 else 1)
            parts_up, parts_down = duu, dud
            duu = empty(H, K, R, device=dev, dtype=plan.uu_dtype)
            dud = empty(H, R, V, device=dev, dtype=plan.ud_dtype)
            carve_chunk_du_sum_kernel[(H, 2)](parts_up, parts_down, duu, dud, parts, H, N_UP=K * R, N_DOWN=R * V,
                                              BLOCK=1024, num_warps=4)
        if not ctx.has_init:
            dS0 = dm0 = dos0 = None
        return dq, dk, dv, dg, da, dw, dud, duu, dS0, dm0, dos0, None


def carve_triton(q, k, v, g, a, w, u_down=None, u_up=None, *, scale=None, chunk_size=64, content_grad="full",
                 initial_state: CarveState | None = None, output_final_state=False, cu_seqlens=None,
                 settings: CarveSettings | None = None):
    """CARVE with the Triton kernels; the contract of :func:`hybrid.ops.carve.carve_chunked`.

    ``settings``: how to run (default: ``choose_settings`` for this shape, dtype and device); the tests
    pass other valid settings to run, in the interpreter, what a GPU chooses."""
    shp = validate(q, k, v, g, a, w, u_down, u_up, chunk_size=chunk_size, content_grad=content_grad,
                   initial_state=initial_state, cu_seqlens=cu_seqlens)
    kw = dict(scale=scale, chunk_size=chunk_size, content_grad=content_grad, initial_state=initial_state,
              output_final_state=output_final_state, cu_seqlens=cu_seqlens)
    if q.dtype == torch.float64:  # the kernels compute in fp32; float64 is the oracles' dtype
        return carve_chunked(q, k, v, g, a, w, u_down, u_up, **kw)
    st = settings if settings is not None else choose_settings(shp, q.dtype, q.device, chunk_size)
    check_value_split(st, shp, q.device)
    if st.kernel == "wide":
        return carve_wide(q, k, v, g, a, w, u_down, u_up, settings=st, **kw)
    dt = q.dtype
    k, v, a, w = (x.to(dt) for x in (k, v, a, w))
    if g.dtype not in (torch.float32, dt):
        g = g.float()
    C = chunk_size
    SC = st.tile_rows  # the kernels' chunk grid is the tile grid; content chunks are C // SC tiles
    if C % SC:
        raise CarveInputError(f"settings.tile_rows={SC} must divide chunk_size={C}")
    starts, lens, pos, ns, offs, total, n_chunks, cseq, cj = tile_grid(shp, q, cu_seqlens, initial_state, SC)
    BK, BV = block(shp.K), block(shp.V)
    plan = SimpleNamespace(
        settings=st, N=shp.n_seq, H=shp.H, K=shp.K, V=shp.V, R=shp.r, C=SC, sub=C // SC,
        starts=starts, lens=lens, pos=pos, ns=ns, offs=offs, total=total, n_chunks=n_chunks, cseq=cseq, cj=cj,
        scale=default_scale(shp.K, scale), vec_w=shp.vector_w, content_grad=content_grad, nv=st.value_split,
        BK=BK, BV=BV, bkp=min(BK, st.post_columns), BR=max(2, triton.next_power_of_2(max(shp.r, 1))),
        ud_dtype=u_down.dtype if u_down is not None else None, uu_dtype=u_up.dtype if u_up is not None else None)
    if initial_state is not None:
        S0 = initial_state.S.float()
        m0 = initial_state.m_prev.float()
        os0 = initial_state.o_sum.float()
    else:
        S0 = m0 = os0 = None
    o, S_f, m_f, os_f = CarveChunkFn.apply(q, k, v, g, a, w, u_down, u_up, S0, m0, os0, plan)
    final = None
    if output_final_state:
        final = CarveState(S_f, m_f, os_f, (pos + lens) % C)
    return o, final
