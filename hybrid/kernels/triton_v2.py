"""CARVE Triton kernels, version 2: ``carve_triton_v2`` with the contract of ``carve_triton`` (v1).

Kernels in :mod:`hybrid.kernels.triton_v2_kernels`, the transposed backward sweep in
:mod:`hybrid.kernels.triton_v2_bwdt`; design and status in
docs/kernels.md ("v2"). The K x V state lives in registers of one program per (sequence, head) through
the sequential sweeps; the content-independent work (cumulative decays, P, the dS-free part of the
backward) and the decayed-product gradients run in parallel launches over (tile, head). Falls back to
v1: head dims above 128 (the state would not fit in registers), and fp32 operands (fp16/fp32 inputs, or
HYBRID_CARVE_V2_DOT=tf32/ieee) with padded K*V above 128*64 (the backward would need more than the
227 KB of shared memory of an H200 block).

Environment knobs (GPU only; the interpreter always computes in fp32 "ieee"). Timings are fwd+bwd on
the H200 at T = 4096 (docs/kernels.md and BENCHMARKS.md have the runs):
- ``HYBRID_CARVE_V2_DOT``: ``input`` (default: operands of the big state/value products in bf16 for
  bf16 inputs, fp32 accumulation; tf32 for fp16/fp32 inputs), ``tf32`` or ``ieee`` (fp32 operands).
- ``HYBRID_CARVE_V2_DEC``: operands of the decayed products (M, P and their gradients): ``fp16``
  (default with bf16 inputs: each operand tile scaled by its largest entry, so tf32's 11-bit
  significand at the 16-bit tensor-core rate), ``fp32`` (at PREC, the default otherwise) or ``bf16``
  (8-bit significand; its dg error at decay 30 is 7.6e-3 against 3.4e-3). See ``_dec_mode``.
- ``HYBRID_CARVE_V2_INV``: precision of the triangular-inverse products: ``tf32`` by default with bf16
  operands (A is rounded to bf16 for its products anyway), else ``ieee``; ``tf32x3`` is a middle way.
- ``HYBRID_CARVE_V2_SAVE_STATE``: ``bf16`` (default with bf16 inputs) or ``fp32``: dtype of the
  chunk-start states kept for the backward (see ``_state_dtype``).
- ``HYBRID_CARVE_V2_BWD``: ``t`` (default) runs the backward sweep on transposed tiles
  (triton_v2_bwdt: its big products have 128 rows and run as warpgroup MMAs), ``n`` on [C, *] tiles.
- ``HYBRID_CARVE_V2_DS_OUT``: ``1`` (default) the backward sweep saves its state gradient per tile and
  the post-pass forms dkt = U dS^T and the tile-decay gradient from it; ``0`` the ``n`` sweep forms both
  (implies ``HYBRID_CARVE_V2_BWD=n``).
- ``HYBRID_CARVE_V2_SUBCHUNK``: rows per tile of all kernels (16, 32 or 64; default: 32, or the
  chunk size if smaller). A tile smaller than the chunk walks each content chunk as several tiles, the
  state passing exactly between them, so the operator (its 64-token content chunk) is unchanged while
  the live tiles shrink.
- ``HYBRID_CARVE_V2_GATHER``: ``1`` takes the reference decays of the dyadic levels from the tile in
  registers (``tl.gather``; implies ``HYBRID_CARVE_V2_BWD=n``); ``0`` (default) reads them back from the
  cumulative-decay buffer (the gather made the forward slower).
- ``HYBRID_CARVE_V2_POST_BK``: key columns per program of the gradient post-pass (default 64; 128
  took 13.41 against 11.63 ms).
- ``HYBRID_CARVE_V2_UNROLL``: ``none`` (default), ``seq``, ``par`` or ``all``: which kernels unroll
  the loop over the dyadic levels (see ``_unroll``).
- ``HYBRID_CARVE_V2_PAR_MAXNREG``: register cap of the parallel launches (default 128; 0: none, which
  took 11.43 against 10.44 ms); ``HYBRID_CARVE_V2_PREP_MAXNREG`` overrides it for prep (default 168: prep
  0.61 against 0.69 ms at 128 and 0.74 uncapped).
- ``HYBRID_CARVE_V2_NUM_WARPS``: warps of the sequential kernels (default 8);
  ``HYBRID_CARVE_V2_BWD_WARPS``: warps of the backward sweep alone (default: as the forward);
  ``HYBRID_CARVE_V2_PAR_WARPS``: warps of the parallel kernels (default 4, 4 and 8 for prep, bprep and
  post; see ``_par_warps``);
  ``HYBRID_CARVE_V2_VSPLIT``: ``auto`` (default), ``1`` or ``4`` programs per (sequence, head) in the
  sweeps, each with that share of the value columns (see ``_vsplit``; auto splits where B*H is small:
  T = 16384, B = 2 went from 26.75 to 21.12 ms);
  ``HYBRID_CARVE_V2_NUM_STAGES``: software pipelining depth of every launch (default 1; 2 pipelines
  one load of each sweep through shared memory and took 11.57 against 10.44 ms).
- ``HYBRID_CARVE_V2_GBUF`` (``operand``, the default, or ``fp32``) and ``HYBRID_CARVE_V2_DE`` (``fp32``,
  the default, or ``operand``): dtypes of the erase gate b (forward -> backward) and of de (backward
  sweep -> post-pass); see ``_grad_dtype``.
- ``HYBRID_CARVE_V2_BWD_HOLD_U``: ``1`` (default) the transposed backward sweep holds U_down, U_up in
  registers, ``0`` reads them once per content chunk (run 10: sweep 3.23 against 3.31 ms; its GPU cases
  have not run yet).
- ``HYBRID_CARVE_V2_DU_SLOTS``: tile slots per program of the content maps' gradient kernel (default 128).
"""

from __future__ import annotations

import os

import torch
import triton

from . import triton_carve as v1
from .chunked import carve_chunked
from .inputs import CarveInputError, CarveState, default_scale, validate
from .triton_v2_bwdt import carve_v2_bwdt_kernel
from .triton_v2_grads import carve_v2_du_kernel, carve_v2_du_sum_kernel, carve_v2_dvw_kernel
from .triton_v2_kernels import (
    carve_v2_bprep_kernel,
    carve_v2_bwd_kernel,
    carve_v2_fwd_kernel,
    carve_v2_post_kernel,
    carve_v2_prep_kernel,
)

SUPPORTED_CHUNKS = (16, 32, 64)
# tile slots per program of carve_v2_du_kernel (T = 4096, B = 8: 9 x 32 programs; HYBRID_CARVE_V2_DU_SLOTS)
DU_SLOTS_PER_PROGRAM = 128
DEFAULT_TILE_ROWS = 32  # 64-token chunks walked as two 32-row tiles: 1.6x faster fwd+bwd on the H200 (docs/kernels.md)
MAX_REGISTER_DIM = 128  # K and V above this fall back to v1
MAX_FP32_OPERAND_TILE = 128 * 64  # padded K*V above this falls back to v1 unless the products take bf16


def _empty(*shape, device, dtype):
    if v1.POISON:  # the test harness poisons kernel outputs through v1's flag
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(*shape, device=device, dtype=dtype)


def _p2(x: int) -> int:
    return max(16, triton.next_power_of_2(x))


def _settings(dtype):
    """(LOWP, PREC, PREC_INV) for the kernels."""
    if v1._interpreting():
        return False, "ieee", "ieee"
    mode = os.environ.get("HYBRID_CARVE_V2_DOT", "input")
    lowp = mode == "input" and dtype == torch.bfloat16  # fp16 keeps fp32 operands (its range is too small)
    inv = os.environ.get("HYBRID_CARVE_V2_INV", "tf32" if lowp else "ieee")  # A is rounded to bf16 anyway
    return lowp, ("tf32" if mode == "input" else mode), inv


def _state_dtype(lowp: bool) -> torch.dtype:
    """dtype of the chunk-start states saved for the backward (the final state is always fp32): bf16 when
    the state products take bf16 operands (LOWP), since the backward only reads them as such operands
    (and in the dgl row sums), fp32 otherwise; HYBRID_CARVE_V2_SAVE_STATE overrides."""
    name = os.environ.get("HYBRID_CARVE_V2_SAVE_STATE", "bf16" if lowp else "fp32")
    if name not in ("fp32", "bf16"):
        raise CarveInputError(f"HYBRID_CARVE_V2_SAVE_STATE must be fp32 or bf16, got {name!r}")
    return torch.float32 if name == "fp32" else torch.bfloat16


def _grad_dtype(name: str, lowp: bool) -> torch.dtype:
    """dtype of two [T, H, K] intermediates: the erase gate b (forward -> backward kernels;
    HYBRID_CARVE_V2_GBUF, default ``operand``) and de (backward sweep -> post-pass; HYBRID_CARVE_V2_DE,
    default ``fp32``). ``operand`` is bf16 with LOWP (fp32 otherwise). At T = 4096 on the H200, b in
    bf16 took fwd+bwd from 9.82 to 9.51 ms (forward sweep -0.10, backward sweep -0.10, post -0.10 ms:
    fewer registers per tile load); da's error on the T4096_decay5 GPU case went 4.2e-3 -> 4.6e-3 (with
    the other knobs of that session-11 call on too)."""
    raw = os.environ.get(f"HYBRID_CARVE_V2_{name}", GRAD_DTYPE_DEFAULTS[name])
    if raw not in ("fp32", "operand"):
        raise CarveInputError(f"HYBRID_CARVE_V2_{name} must be fp32 or operand, got {raw!r}")
    return torch.bfloat16 if raw == "operand" and lowp else torch.float32


GRAD_DTYPE_DEFAULTS = {"GBUF": "operand", "DE": "fp32"}


def _du_slots() -> int:
    """Tile slots per program of carve_v2_du_kernel: HYBRID_CARVE_V2_DU_SLOTS, default DU_SLOTS_PER_PROGRAM."""
    raw = os.environ.get("HYBRID_CARVE_V2_DU_SLOTS", str(DU_SLOTS_PER_PROGRAM))
    if not raw.isdigit() or int(raw) < 1:
        raise CarveInputError(f"HYBRID_CARVE_V2_DU_SLOTS must be a positive integer, got {raw!r}")
    return int(raw)
DEC_MODES = {"fp32": 0, "bf16": 1, "fp16": 2}


def _dec_mode(lowp: bool) -> int:
    """Operands of the decayed products (M, P and their gradients), HYBRID_CARVE_V2_DEC: ``fp16``
    (default with LOWP: each operand tile scaled by its largest entry, then fp16, so tf32's mantissa at
    the 16-bit tensor-core rate), ``fp32`` (fp32 operands at PREC, the default otherwise) or ``bf16``
    (LOWP only: an 8-bit mantissa). Returns the kernels' DEC constant."""
    name = os.environ.get("HYBRID_CARVE_V2_DEC", "fp16" if lowp else "fp32")
    if name not in DEC_MODES:
        raise CarveInputError(f"HYBRID_CARVE_V2_DEC must be one of {sorted(DEC_MODES)}, got {name!r}")
    if name == "bf16" and not lowp:
        name = "fp32"
    return DEC_MODES[name]


def _tile_rows(C: int) -> int:
    """Rows per tile of the kernels: HYBRID_CARVE_V2_SUBCHUNK, else 32 (or the chunk size if smaller)."""
    raw = os.environ.get("HYBRID_CARVE_V2_SUBCHUNK")
    if raw is None:
        return min(C, DEFAULT_TILE_ROWS)
    try:
        sc = int(raw)
    except ValueError:
        sc = 0
    if sc not in SUPPORTED_CHUNKS or sc > C or C % sc:
        raise CarveInputError(f"HYBRID_CARVE_V2_SUBCHUNK must be one of {SUPPORTED_CHUNKS} dividing the chunk size "
                              f"{C}, got {raw!r}")
    return sc


def _grid(shp, q, cu_seqlens, initial_state, SC: int):
    """The tile grid of the kernels: per sequence its start, length, start position, tile count and
    buffer offset (one extra slot per sequence for the final m), the buffer size, and for the parallel
    launches each tile's sequence and index. A fixed-length batch without a carried state has the same
    grid for every sequence, built here without reading anything back from the GPU (a device sync
    before the first launch would leave the GPU idle while the host prepares the launches); varlen
    batches and carried states need their lengths and positions on the host once."""
    dev = q.device
    i64 = torch.int64
    if cu_seqlens is None and initial_state is None:
        N, ns_i = shp.n_seq, -(-shp.T // SC)
        starts = torch.arange(N, device=dev, dtype=i64) * shp.T
        lens = torch.full((N,), shp.T, device=dev, dtype=i64)
        pos = torch.zeros(N, device=dev, dtype=i64)
        ns = torch.full((N,), ns_i, device=dev, dtype=i64)
        offs = torch.arange(N, device=dev, dtype=i64) * (ns_i + 1)
        total, n_chunks = N * (ns_i + 1), N * ns_i
        if n_chunks == 0:
            return starts, lens, pos, ns, offs, total, 0, None, None
        tiles = torch.arange(n_chunks, device=dev, dtype=i64)
        return starts, lens, pos, ns, offs, total, n_chunks, tiles // ns_i, tiles % ns_i
    starts, lens, pos, ns, offs, total = v1._layout(shp, q, cu_seqlens, initial_state, SC)
    n_chunks = total - shp.n_seq
    if n_chunks == 0:
        return starts, lens, pos, ns, offs, total, 0, None, None
    seqs = torch.arange(shp.n_seq, device=dev, dtype=i64)
    cseq = torch.repeat_interleave(seqs, ns, output_size=n_chunks)
    first = torch.cumsum(ns, 0) - ns
    cj = torch.arange(n_chunks, device=dev, dtype=i64) - first[cseq]
    return starts, lens, pos, ns, offs, total, n_chunks, cseq, cj


def _post_columns(BK: int) -> int:
    """Key columns per program of the gradient post-pass (HYBRID_CARVE_V2_POST_BK, default 64): its
    columns are independent, so K = 128 runs as two programs per (chunk, head), each with half the registers."""
    raw = os.environ.get("HYBRID_CARVE_V2_POST_BK", "64")
    if raw not in ("16", "32", "64", "128"):
        raise CarveInputError(f"HYBRID_CARVE_V2_POST_BK must be 16, 32, 64 or 128, got {raw!r}")
    return min(BK, int(raw))


def _unroll(levels: int) -> tuple[int, int]:
    """Unroll factors of the dyadic level loops (sequential kernels, parallel kernels) from
    HYBRID_CARVE_V2_UNROLL: none (default), seq, par or all. Offline (sm_90, 32-row tiles), unrolled
    levels cut the sweeps' spill stack (fwd 912 -> 736 B, bwd 2872 -> 2264 B) but raise post's under
    its register cap (360 -> 976 B)."""
    raw = os.environ.get("HYBRID_CARVE_V2_UNROLL", "none")
    if raw not in ("none", "seq", "par", "all"):
        raise CarveInputError(f"HYBRID_CARVE_V2_UNROLL must be none, seq, par or all, got {raw!r}")
    full = max(levels, 1)
    return (full if raw in ("seq", "all") else 1), (full if raw in ("par", "all") else 1)


def par_maxnreg() -> int:
    """Register cap of the parallel launches (prep, bprep, post): HYBRID_CARVE_V2_PAR_MAXNREG, default 128; 0 = none."""
    return int(os.environ.get("HYBRID_CARVE_V2_PAR_MAXNREG", "128"))


def prep_maxnreg() -> int:
    """Register cap of the prep launch: HYBRID_CARVE_V2_PREP_MAXNREG, default 168 (0 with
    HYBRID_CARVE_V2_PAR_MAXNREG=0); at T = 4096 on the H200 prep took 0.61 ms at 168, 0.69 at 128 and 0.74 uncapped."""
    return int(os.environ.get("HYBRID_CARVE_V2_PREP_MAXNREG", "168" if par_maxnreg() > 0 else "0"))


def _par_warps() -> tuple[int, int, int]:
    """Warps of the parallel launches (prep, bprep, post): HYBRID_CARVE_V2_PAR_WARPS sets all three;
    by default 4, 4 and 8 (on the H200, 4 warps took prep from 1.03 to 0.80 ms and bprep from 0.56 to
    0.34 ms at T = 4096, but post from 3.65 to 4.13 ms)."""
    raw = os.environ.get("HYBRID_CARVE_V2_PAR_WARPS")
    if raw is not None:
        return int(raw), int(raw), int(raw)
    return 4, 4, 8


def _exchange_buffers(meta, content: bool, dev):
    """(xbuf, xflag) of the V split's exchanges (_vsum): a [NV, BR] fp32 slot and a zeroed int32
    counter per (tile, head), one use each per launch; 1-element dummies without the split or content."""
    if meta.nv == 1 or not content:
        return torch.zeros(1, device=dev, dtype=torch.float32), torch.zeros(1, device=dev, dtype=torch.int32)
    return (torch.empty(meta.total * meta.H * meta.nv * meta.BR, device=dev, dtype=torch.float32),
            torch.zeros(meta.total * meta.H, device=dev, dtype=torch.int32))


# programs per (sequence, head). A 2-way split of a 128 x 128 state (64 value columns per program) gave
# wrong erase-gate gradients and then an illegal address on the H200 (session 9, cause not found; 2-way
# splits of K48/V80 and K64/V64 states passed): not offered until found
VSPLITS = (1, 4)


def _vsplit(n_programs: int, V: int, BV: int, bwd_t: bool, dev, tile_rows: int = 32) -> int:
    """Programs per (sequence, head) of the sequential sweeps, each holding BV / NV of the state's value
    columns (HYBRID_CARVE_V2_VSPLIT: auto, 1 or 4; see VSPLITS). The NV programs of one (sequence, head) exchange
    their parts of the content signal once per content chunk and wait for each other (_vsum), so they
    must all be running: ``auto`` (the default) takes the largest NV whose grid, NV * N * H programs,
    fits one per multiprocessor (every program then starts at once), and only with at least 32 value
    columns per program and none without a valid column. A forced NV above that relies on the GPU starting programs in grid order (the
    NV programs of one pair are adjacent). The interpreter runs programs one after another: always 1."""
    raw = os.environ.get("HYBRID_CARVE_V2_VSPLIT", "auto")
    if raw not in ("auto",) + tuple(str(x) for x in VSPLITS):
        raise CarveInputError(f"HYBRID_CARVE_V2_VSPLIT must be auto, 1 or 4, got {raw!r}")
    if v1._interpreting() or not bwd_t or dev.type != "cuda" or tile_rows > 32:
        # 64-row tiles (HYBRID_CARVE_V2_SUBCHUNK=64) split in 4 gave wrong outputs with content on and an
        # illegal address with content off on the H200 (session 10; unsplit they pass): never split them
        return 1
    if raw != "auto":
        nv = int(raw)
        return nv if _vsplit_fits(nv, V, BV) else 1
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    return max(cand for cand in VSPLITS if cand == 1 or (cand * n_programs <= sms and _vsplit_fits(cand, V, BV)))


def _vsplit_fits(nv: int, V: int, BV: int) -> bool:
    """At least 32 value columns per program, and a valid one in every program's block."""
    return nv == 1 or (BV // nv >= 32 and (nv - 1) * (BV // nv) < V)


def _seq_warps() -> int:
    return int(os.environ.get("HYBRID_CARVE_V2_NUM_WARPS", "8"))


class CarveTritonV2Fn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, a, w, u_down, u_up, S0, m0, os0, meta):
        N, H, K, V, R, C = meta.N, meta.H, meta.K, meta.V, meta.R, meta.C
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
        Gb = _empty(TT, H, K, device=dev, dtype=f32)
        # P and A enter their products in the operand dtype only: kept in it (bf16 with LOWP), no loss
        cc_dtype = torch.bfloat16 if meta.lowp else f32
        Pb = _empty(meta.total, H, C, C, device=dev, dtype=cc_dtype)
        o = _empty(q.shape[0], q.shape[1], H, V, device=dev, dtype=q.dtype)
        ubuf = _empty(TT, H, V, device=dev, dtype=cc_dtype)  # U in the operand dtype, for the backward
        hbuf = _empty(meta.total, H, K, V, device=dev, dtype=meta.state_dtype)  # chunk-start states
        S_f = _empty(N, H, K, V, device=dev, dtype=f32)
        mbuf = _empty(meta.total, H, V, device=dev, dtype=f32)
        abuf = _empty(meta.total, H, C, C, device=dev, dtype=cc_dtype)
        # per tile, the largest |q| and |k| (scales of the fp16 decayed products, DEC_MODES["fp16"])
        qks = _empty(meta.total, H, 2, device=dev, dtype=f32) if meta.dec == DEC_MODES["fp16"] else dummy
        osf = _empty(N, H, V, device=dev, dtype=f32)
        gbuf = _empty(TT, H, K, device=dev, dtype=_grad_dtype("GBUF", meta.lowp))  # the erase gate b, for the backward
        common = dict(K=K, C=C, NB=C // 16, LOG2C=C.bit_length() - 1, BK=meta.BK, HAS_INIT=has_init,
                      DEC=meta.dec, GATHER=meta.gather)
        if meta.n_chunks > 0:
            carve_v2_prep_kernel[(meta.n_chunks, H)](
                qc, kc, gc, Gb, Pb, qks, meta.starts, meta.lens, meta.offs, meta.pos, meta.cseq, meta.cj, H,
                PREC=meta.prec, UNR=meta.unroll_par, num_warps=meta.prep_warps, num_stages=meta.num_stages,
                **meta.prep_opts, **common)
        xbuf, xflag = _exchange_buffers(meta, content, dev)
        carve_v2_fwd_kernel[(N * meta.nv, H)](
            qc, kc, vc, ac, wc, udc, uuc, o, ubuf, Gb, Pb, qks,
            S0.contiguous() if has_init else dummy, m0.contiguous() if has_init else dummy,
            os0.contiguous() if has_init else dummy, meta.pos,
            hbuf, mbuf, abuf, gbuf, osf, S_f, xbuf, xflag, meta.starts, meta.lens, meta.offs, meta.scale, H,
            V=V, R=max(R, 1), BV=meta.BV // meta.nv, BR=meta.BR, HAS_CONTENT=content, VEC_W=meta.vec_w, SUB=meta.sub,
            LOWP=meta.lowp, PREC=meta.prec, PREC_INV=meta.prec_inv, UNR=meta.unroll_seq, NV=meta.nv,
            num_warps=meta.num_warps,
            num_stages=meta.num_stages, **common)
        m_f = mbuf.index_select(0, meta.offs + meta.ns)
        ctx.save_for_backward(qc, kc, vc, ac, wc, udc, uuc, Gb, Pb, hbuf, mbuf, abuf, ubuf, qks, gbuf)
        ctx.meta = meta
        ctx.has_init = has_init
        ctx.content = content
        ctx.g_dtype = g.dtype
        return o, S_f, m_f, osf

    @staticmethod
    def backward(ctx, do, dS_f, dm_f, dos_f):
        qc, kc, vc, ac, wc, udc, uuc, Gb, Pb, hbuf, mbuf, abuf, ubuf, qks, gbuf = ctx.saved_tensors
        meta = ctx.meta
        N, H, K, V, R, C = meta.N, meta.H, meta.K, meta.V, meta.R, meta.C
        dev = qc.device
        f32 = torch.float32
        content = ctx.content
        TT = qc.shape[0] * qc.shape[1]
        if do is None:
            do = torch.zeros(qc.shape[0], qc.shape[1], H, V, device=dev, dtype=qc.dtype)
        do = do.contiguous()
        dummy = torch.zeros(1, device=dev, dtype=f32)
        nv = meta.nv  # the V split: the sweep writes nv parts of de, dM and dc (added by the post-pass / here)
        deb = _empty(nv, TT, H, K, device=dev, dtype=_grad_dtype("DE", meta.lowp))  # de, for the post-pass
        if meta.ds_out:  # the state gradient at each tile's end, for the post-pass (operand dtype)
            dsb = _empty(meta.total, H, K, V, device=dev, dtype=ubuf.dtype)
            dkb = dglb = dummy
        else:
            dsb = dummy
            dkb = _empty(TT, H, K, device=dev, dtype=f32)
            dglb = _empty(meta.total, H, K, device=dev, dtype=f32)
        corrb = _empty(meta.total, H, V, device=dev, dtype=f32)
        dMb = _empty(nv, meta.total, H, C, C, device=dev, dtype=f32)
        da = _empty(*ac.shape, device=dev, dtype=ac.dtype)
        if meta.vec_w or not meta.bwd_t:
            dv = _empty(*vc.shape, device=dev, dtype=vc.dtype)
            dw = _empty(*wc.shape, device=dev, dtype=wc.dtype)
        else:  # the transposed sweep writes dR (fp32) into dv, and dv, dw are formed from it below
            dv = _empty(*vc.shape, device=dev, dtype=f32)
            dw = dummy
        if content:  # per-chunk sums on each content chunk's first tile, zero elsewhere: one zeroed buffer
            n_dc = nv * meta.total * H * K
            zb = torch.zeros(n_dc + meta.total * H * R, device=dev, dtype=f32)
            dcb = zb[:n_dc].view(nv, meta.total, H, K)
            dlowb = zb[n_dc:].view(meta.total, H, R)
        else:
            dcb = dlowb = dummy
        dS0 = _empty(N, H, K, V, device=dev, dtype=f32)
        dm0 = _empty(N, H, V, device=dev, dtype=f32)
        dos0 = _empty(N, H, V, device=dev, dtype=f32)
        common = dict(K=K, V=V, R=max(R, 1), C=C, NB=C // 16, LOG2C=C.bit_length() - 1, BK=meta.BK, BV=meta.BV,
                      BR=meta.BR, DEC=meta.dec, GATHER=meta.gather,
                      HAS_INIT=ctx.has_init, HAS_CONTENT=content)
        # the dS-free parts of the backward, in parallel over tiles (see carve_v2_bprep_kernel)
        w1b = _empty(TT, H, K, device=dev, dtype=ubuf.dtype)
        dr0b = _empty(TT, H, V, device=dev, dtype=f32)
        a2b = _empty(TT, H, device=dev, dtype=f32)
        if meta.n_chunks > 0:
            carve_v2_bprep_kernel[(meta.n_chunks, H)](
                kc, do, Gb, Pb, abuf, w1b, dr0b, a2b,
                meta.starts, meta.lens, meta.offs, meta.pos, meta.cseq, meta.cj, meta.scale, H,
                K=K, V=V, C=C, BK=meta.BK, BV=meta.BV, HAS_INIT=ctx.has_init, LOWP=meta.lowp, PREC=meta.prec,
                num_warps=meta.bprep_warps, num_stages=meta.num_stages, **meta.par_opts)
        finals = (dS_f.contiguous().float() if dS_f is not None else dummy,
                  dm_f.contiguous().float() if dm_f is not None else dummy,
                  dos_f.contiguous().float() if dos_f is not None else dummy)
        sweep = dict(FULL_CONTENT_GRAD=meta.content_grad == "full", VEC_W=meta.vec_w,
                     HAS_DHT=dS_f is not None, HAS_DMF=dm_f is not None, HAS_DOSF=dos_f is not None, SUB=meta.sub,
                     LOWP=meta.lowp, PREC=meta.prec, UNR=meta.unroll_seq, num_warps=meta.bwd_warps,
                     num_stages=meta.num_stages, **common)
        if meta.bwd_t:  # the sweep on transposed tiles (triton_v2_bwdt)
            sweep.pop("GATHER")
            sweep["BV"] = meta.BV // nv
            xbuf, xflag = _exchange_buffers(meta, content, dev)
            carve_v2_bwdt_kernel[(N * nv, H)](
                qc, kc, vc, gbuf, wc, udc, uuc, do, Gb, ubuf, w1b, dr0b, a2b, qks, meta.pos, hbuf, *finals,
                corrb, deb, dsb, da, dv, dw, dMb, dcb, dlowb, dS0, dm0, dos0, xbuf, xflag,
                meta.starts, meta.lens, meta.offs, meta.scale, H, deb[0].numel(), dMb[0].numel(),
                dcb[0].numel() if content else 0, NV=nv, HOLD_U=meta.hold_u, **sweep)
            if not meta.vec_w:
                dR = dv
                dv = _empty(*vc.shape, device=dev, dtype=vc.dtype)
                dw = _empty(*wc.shape, device=dev, dtype=wc.dtype)
                rows = TT * H
                carve_v2_dvw_kernel[(triton.cdiv(rows, 64),)](dR, vc, wc, dv, dw, rows, V=V, BV=meta.BV, BLOCK=64,
                                                              num_warps=4)
                del dR
        else:
            assert nv == 1  # (the dispatcher splits V only for the transposed sweep)
            carve_v2_bwd_kernel[(N, H)](
                qc, kc, vc, ac, wc, udc, uuc, do, Gb, ubuf, w1b, dr0b, a2b, qks, meta.pos, hbuf, mbuf, *finals,
                corrb, dkb, deb, dglb, dsb, da, dv, dw, dMb, dcb, dlowb, dS0, dm0, dos0,
                meta.starts, meta.lens, meta.offs, meta.scale, H, DS_OUT=meta.ds_out, **sweep)
        dq = _empty(*qc.shape, device=dev, dtype=qc.dtype)
        dk = _empty(*kc.shape, device=dev, dtype=kc.dtype)
        dg = _empty(*qc.shape, device=dev, dtype=ctx.g_dtype)
        if meta.n_chunks > 0:
            carve_v2_post_kernel[(meta.n_chunks, H, triton.cdiv(K, meta.bkp))](
                qc, kc, gbuf, do, Gb, ubuf, hbuf, corrb, dMb, dkb, deb, dglb, dsb, qks, dq, dk, dg, da,
                meta.starts, meta.lens, meta.offs, meta.pos, meta.cseq, meta.cj, meta.scale, H, deb[0].numel(),
                dMb[0].numel(), BKP=meta.bkp, NV=nv,
                LOWP=meta.lowp, PREC=meta.prec, UNR=meta.unroll_par, num_warps=meta.post_warps, num_stages=meta.num_stages,
                DS_OUT=meta.ds_out, **meta.par_opts, **common)
        dud = duu = None
        if content:  # dU_up = sum_c dc (U_down m)^T, dU_down = sum_c (U_up^T dc) m^T (carve_v2_du_kernel)
            per = _du_slots()
            parts = triton.cdiv(meta.total, per)
            duu = _empty(parts, H, K, R, device=dev, dtype=f32)
            dud = _empty(parts, H, R, V, device=dev, dtype=f32)
            carve_v2_du_kernel[(H, 2, parts)](udc, mbuf, dcb, dlowb, duu, dud, meta.total, H, dcb[0].numel(), per,
                                              K=K, V=V, R=R, BK=meta.BK, BV=meta.BV, BR=max(16, meta.BR), NV=nv,
                                              BC=64, PREC="ieee" if v1._interpreting() else "tf32x3", num_warps=4,
                                              num_stages=3 if nv == 1 else 1)
            # (shared memory at K = V = 128: 152 KB pipelined in 3 stages, 48 KB in 1; the V split's 4 parts
            # of dc in 3 stages would need 344 KB, more than an H200 block has: OutOfResources, session 11)
            parts_up, parts_down = duu, dud
            duu = _empty(H, K, R, device=dev, dtype=meta.uu_dtype)
            dud = _empty(H, R, V, device=dev, dtype=meta.ud_dtype)
            carve_v2_du_sum_kernel[(H, 2)](parts_up, parts_down, duu, dud, parts, H, N_UP=K * R, N_DOWN=R * V,
                                           BLOCK=1024, num_warps=4)
        if not ctx.has_init:
            dS0 = dm0 = dos0 = None
        return dq, dk, dv, dg, da, dw, dud, duu, dS0, dm0, dos0, None


def carve_triton_v2(q, k, v, g, a, w, u_down=None, u_up=None, *, scale=None, chunk_size=64, content_grad="full",
                    initial_state: CarveState | None = None, output_final_state=False, cu_seqlens=None):
    """CARVE with the v2 Triton kernels. Same contract as :func:`hybrid.kernels.triton_carve.carve_triton`."""
    shp = validate(q, k, v, g, a, w, u_down, u_up, chunk_size=chunk_size, content_grad=content_grad,
                   initial_state=initial_state, cu_seqlens=cu_seqlens)
    kw = dict(scale=scale, chunk_size=chunk_size, content_grad=content_grad, initial_state=initial_state,
              output_final_state=output_final_state, cu_seqlens=cu_seqlens)
    if q.dtype == torch.float64:  # the kernels compute in fp32; float64 is the oracles' dtype
        return carve_chunked(q, k, v, g, a, w, u_down, u_up, **kw)
    if chunk_size not in SUPPORTED_CHUNKS:
        raise CarveInputError(f"the Triton CARVE kernels support chunk_size in {SUPPORTED_CHUNKS}, got {chunk_size}")
    if shp.K > MAX_REGISTER_DIM or shp.V > MAX_REGISTER_DIM:
        return v1.carve_triton(q, k, v, g, a, w, u_down, u_up, **kw)  # documented fallback
    if not _settings(q.dtype)[0] and _p2(shp.K) * _p2(shp.V) > MAX_FP32_OPERAND_TILE:
        # fp32 operands for [K, V] tiles this large need more shared memory than an H200 block has
        # (the backward needs 256 KB at K = V = 128, compiled offline): v1 for now (documented)
        return v1.carve_triton(q, k, v, g, a, w, u_down, u_up, **kw)
    dt = q.dtype
    k, v, a, w = (x.to(dt) for x in (k, v, a, w))
    if g.dtype not in (torch.float32, dt):
        g = g.float()
    C = chunk_size
    SC = _tile_rows(C)  # the kernels' chunk grid is the tile grid; content chunks are C // SC tiles
    meta = v1._Meta()
    meta.N, meta.H, meta.K, meta.V, meta.R, meta.C = shp.n_seq, shp.H, shp.K, shp.V, shp.r, SC
    meta.sub = C // SC
    (meta.starts, meta.lens, meta.pos, meta.ns, meta.offs, meta.total, meta.n_chunks, meta.cseq,
     meta.cj) = _grid(shp, q, cu_seqlens, initial_state, SC)
    pos, lens = meta.pos, meta.lens
    meta.scale = default_scale(shp.K, scale)
    meta.vec_w = shp.vector_w
    meta.content_grad = content_grad
    meta.lowp, meta.prec, meta.prec_inv = _settings(dt)
    meta.dec = _dec_mode(meta.lowp)
    # the backward sweep saves its state gradient per tile and the post-pass forms dkt = U dS^T and the
    # tile-decay gradient from it (1, default), or the sweep forms both (0)
    meta.ds_out = os.environ.get("HYBRID_CARVE_V2_DS_OUT", "1") == "1"
    meta.gather = os.environ.get("HYBRID_CARVE_V2_GATHER", "0") == "1"
    # the backward sweep on transposed tiles (HYBRID_CARVE_V2_BWD=t, triton_v2_bwdt) or as [C, *] tiles (n);
    # the transposed sweep implies DS_OUT and reads the level decays back from memory (no GATHER)
    bwd = os.environ.get("HYBRID_CARVE_V2_BWD", "t")
    if bwd not in ("t", "n"):
        raise CarveInputError(f"HYBRID_CARVE_V2_BWD must be t or n, got {bwd!r}")
    meta.bwd_t = bwd == "t" and meta.ds_out and not meta.gather
    # the transposed backward sweep holds U_down, U_up in registers (HYBRID_CARVE_V2_BWD_HOLD_U=1, default)
    # or reads them once per content chunk (0), as the forward does
    meta.hold_u = os.environ.get("HYBRID_CARVE_V2_BWD_HOLD_U", "1") == "1"
    meta.nv = _vsplit(shp.n_seq * shp.H, shp.V, _p2(shp.V), meta.bwd_t, q.device, SC)
    meta.num_warps = _seq_warps()
    meta.bwd_warps = int(os.environ.get("HYBRID_CARVE_V2_BWD_WARPS", meta.num_warps))
    meta.prep_warps, meta.bprep_warps, meta.post_warps = _par_warps()
    meta.num_stages = int(os.environ.get("HYBRID_CARVE_V2_NUM_STAGES", "1"))
    # register cap of the parallel launches, so that two programs share an SM (offline sm_90: prep 123
    # registers without spills, post 128 with 360 B of spill stack, against 200-255 uncapped)
    maxnreg = par_maxnreg()
    meta.par_opts = {} if v1._interpreting() or maxnreg <= 0 else {"maxnreg": maxnreg}
    prep_cap = prep_maxnreg()
    meta.prep_opts = {} if v1._interpreting() or prep_cap <= 0 else {"maxnreg": prep_cap}
    meta.state_dtype = _state_dtype(meta.lowp)
    meta.BK, meta.BV = _p2(shp.K), _p2(shp.V)
    meta.bkp = _post_columns(meta.BK)
    meta.unroll_seq, meta.unroll_par = _unroll(SC.bit_length() - 1)
    meta.BR = max(2, triton.next_power_of_2(max(shp.r, 1)))
    meta.ud_dtype = u_down.dtype if u_down is not None else None
    meta.uu_dtype = u_up.dtype if u_up is not None else None
    if initial_state is not None:
        S0 = initial_state.S.float()
        m0 = initial_state.m_prev.float()
        os0 = initial_state.o_sum.float()
    else:
        S0 = m0 = os0 = None
    o, S_f, m_f, os_f = CarveTritonV2Fn.apply(q, k, v, g, a, w, u_down, u_up, S0, m0, os0, meta)
    final = None
    if output_final_state:
        final = CarveState(S_f, m_f, os_f, (pos + lens) % C)
    return o, final
