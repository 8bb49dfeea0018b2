"""One fused kernel for a whole CARVE (or GDN-2) layer decode step, between its projections and o_proj.

Per row n and head h (one program each), from the projections of the new token:

    qkv  = SiLU(short_conv(conv_state, x_qkv))           conv state shifted in place
    q, k = q / max(|q|, 1e-6), k / max(|k|, 1e-6)        per head
    g    = -exp(A_log) * softplus(f + dt_bias)
    b    = sigmoid(a + U_up U_down m_prev)               content term (when U is given)
    w    = sigmoid(w_logits)                             scalar per head, or per value channel (GDN-2)
    S'   = Diag(exp g) S;   S = S' + k (w v - S'^T (b k))^T;   o = S^T (scale q)
    o_sum += o; at a chunk end m_prev = o_sum / C, o_sum = 0
    y    = RMSNorm(o) * norm_weight * SiLU(gate)

S, m_prev, o_sum and the conv state are fp32 and updated in place (all reads before the first write);
the position in the chunk is ``lengths % C`` (the row's real tokens so far, which the caller advances
after the step), and ``pos`` receives the position after the step. No host sync and fixed shapes: it can be captured in a CUDA graph.
The operator's definition is ``carve_step`` in ``hybrid.ops.carve.reference``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _conv_silu(x_row, cs_row, conv_w, ch, mask, W: tl.constexpr):
    """SiLU(causal conv) of channels ``ch`` of one row (reads only)."""
    acc = tl.load(conv_w + ch * W + (W - 1), mask=mask, other=0.0).to(tl.float32) * \
        tl.load(x_row + ch, mask=mask, other=0.0).to(tl.float32)
    for i in tl.static_range(W - 1):
        si = tl.load(cs_row + ch * (W - 1) + i, mask=mask, other=0.0)
        acc += tl.load(conv_w + ch * W + i, mask=mask, other=0.0).to(tl.float32) * si
    return acc * tl.sigmoid(acc)


@triton.jit
def _conv_shift(x_row, cs_row, ch, mask, W: tl.constexpr):
    """Shift the conv state of channels ``ch`` by one input, in place (oldest first). A value may be held
    by several threads of the program, so every entry is read by all of them (barrier) before the entry
    below it is overwritten."""
    for i in tl.static_range(1, W - 1):
        si = tl.load(cs_row + ch * (W - 1) + i, mask=mask, other=0.0)
        tl.debug_barrier()
        tl.store(cs_row + ch * (W - 1) + (i - 1), si, mask=mask)
    if W > 1:
        tl.store(cs_row + ch * (W - 1) + (W - 2), tl.load(x_row + ch, mask=mask, other=0.0).to(tl.float32),
                 mask=mask)


@triton.jit
def carve_decode_step_kernel(
    x, conv_state, conv_w, f, dt_bias, A_log, a, w, gate, ud, uu, norm_w,
    S, m_prev, o_sum, pos, lengths, y,
    scale, eps,
    H, CH, sx, sa, sw,
    K: tl.constexpr, V: tl.constexpr, R: tl.constexpr, W: tl.constexpr, CHUNK: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, BR: tl.constexpr, HAS_CONTENT: tl.constexpr, VEC_W: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    nh = n * H + h
    rk = tl.arange(0, BK)
    km = rk < K
    rv = tl.arange(0, BV)
    vm = rv < V
    x_row = x + n * sx
    cs_row = conv_state + n * CH * (W - 1)
    q = _conv_silu(x_row, cs_row, conv_w, h * K + rk, km, W)
    k = _conv_silu(x_row, cs_row, conv_w, H * K + h * K + rk, km, W)
    v = _conv_silu(x_row, cs_row, conv_w, 2 * H * K + h * V + rv, vm, W)
    q = q / tl.maximum(tl.sqrt(tl.sum(q * q, axis=0)), 1e-6)
    k = k / tl.maximum(tl.sqrt(tl.sum(k * k, axis=0)), 1e-6)

    fv = tl.load(f + nh * K + rk, mask=km, other=0.0).to(tl.float32) + \
        tl.load(dt_bias + h * K + rk, mask=km, other=0.0).to(tl.float32)
    sp = tl.where(fv > 20.0, fv, tl.log(1.0 + tl.exp(tl.minimum(fv, 20.0))))  # softplus, threshold 20
    g = -tl.exp(tl.load(A_log + h).to(tl.float32)) * sp
    logit = tl.load(a + n * sa + h * K + rk, mask=km, other=0.0).to(tl.float32)
    mp = tl.load(m_prev + nh * V + rv, mask=vm, other=0.0)
    if HAS_CONTENT:
        rr = tl.arange(0, BR)
        rm = rr < R
        udt = tl.load(ud + h * R * V + rr[:, None] * V + rv[None, :], mask=rm[:, None] & vm[None, :],
                      other=0.0).to(tl.float32)
        low = tl.sum(udt * mp[None, :], axis=1)  # [BR]
        uut = tl.load(uu + h * K * R + rk[:, None] * R + rr[None, :], mask=km[:, None] & rm[None, :],
                      other=0.0).to(tl.float32)
        logit += tl.sum(uut * low[None, :], axis=1)
    b = tl.sigmoid(logit)
    if VEC_W:
        wv = tl.sigmoid(tl.load(w + n * sw + h * V + rv, mask=vm, other=0.0).to(tl.float32))
    else:
        wv = tl.sigmoid(tl.load(w + n * sw + h).to(tl.float32))

    smask = km[:, None] & vm[None, :]
    sptr = S + nh * K * V + rk[:, None] * V + rv[None, :]
    s = tl.exp(g)[:, None] * tl.load(sptr, mask=smask, other=0.0)
    rd = tl.sum(s * (b * k)[:, None], axis=0)
    s = s + k[:, None] * (wv * v - rd)[None, :]
    o = tl.sum(s * (scale * q)[:, None], axis=0)  # [BV], zero past V
    p = tl.load(lengths + n) % CHUNK + 1
    full = p == CHUNK
    osum = tl.load(o_sum + nh * V + rv, mask=vm, other=0.0) + o
    inv = 1.0 / tl.sqrt(tl.sum(o * o, axis=0) / V + eps)
    gt = tl.load(gate + nh * V + rv, mask=vm, other=0.0).to(tl.float32)
    out = o * inv * tl.load(norm_w + rv, mask=vm, other=0.0).to(tl.float32) * (gt * tl.sigmoid(gt))

    # every read of the state is done (by every thread holding a copy) before the first write
    tl.debug_barrier()
    tl.store(sptr, s, mask=smask)
    tl.store(m_prev + nh * V + rv, tl.where(full, osum / CHUNK, mp), mask=vm)
    tl.store(o_sum + nh * V + rv, tl.where(full, 0.0, osum), mask=vm)
    if h == 0:
        tl.store(pos + n, tl.where(full, 0, p))
    tl.store(y + nh * V + rv, out.to(y.dtype.element_ty), mask=vm)
    _conv_shift(x_row, cs_row, h * K + rk, km, W)
    _conv_shift(x_row, cs_row, H * K + h * K + rk, km, W)
    _conv_shift(x_row, cs_row, 2 * H * K + h * V + rv, vm, W)


def carve_decode_step(x_qkv, conv_state, conv_weight, f, dt_bias, A_log, a, w, gate, u_down, u_up, norm_weight,
                      S, m_prev, o_sum, pos, lengths, *, chunk_size: int, eps: float,
                      scale: float | None = None) -> torch.Tensor:
    """The fused step for ``B`` rows. Shapes: ``x_qkv [B, 2HK + HV]`` (q, k, v projections before the
    convolution), ``conv_state [B, 2HK + HV, c - 1]`` (fp32, in place), ``conv_weight [2HK + HV, c]``,
    ``f, a [B, H*K]`` (decay and erase-gate logits), ``w [B, H]`` or ``[B, H*V]`` (write-gate logits),
    ``gate [B, H*V]``, ``u_down [H, r, V]`` / ``u_up [H, K, r]`` or None, ``norm_weight [V]``,
    ``S [B, H, K, V]``, ``m_prev, o_sum [B, H, V]`` (fp32, in place), ``pos, lengths [B]`` (int64).
    ``x_qkv``, ``a`` and ``w`` may be column slices of one wider projection. Returns ``y [B, H*V]`` in the
    dtype of ``gate``."""
    B, H, K, V = S.shape
    CH = 2 * H * K + H * V
    if x_qkv.shape != (B, CH) or conv_state.shape[:2] != (B, CH) or conv_weight.shape[0] != CH:
        raise ValueError(f"carve_decode_step: x_qkv must be [B, 2HK + HV] = [{B}, {CH}] with a matching conv "
                         f"state and weight, got {tuple(x_qkv.shape)}, {tuple(conv_state.shape)}, "
                         f"{tuple(conv_weight.shape)}")
    for name, t in (("S", S), ("m_prev", m_prev), ("o_sum", o_sum), ("conv_state", conv_state)):
        if t.dtype != torch.float32 or not t.is_contiguous():
            raise ValueError(f"carve_decode_step: {name} must be a contiguous fp32 buffer (updated in place)")
    # x_qkv, a and w may be column slices of one wider projection: rows at any stride, columns packed
    x_qkv, a, w = (t if t.stride(-1) == 1 else t.contiguous() for t in (x_qkv, a, w))
    vec_w = w.shape[-1] == H * V and H * V != H
    content = u_down is not None
    R = u_down.shape[1] if content else 1
    width = conv_weight.shape[1]
    y = torch.empty(B, H * V, device=S.device, dtype=gate.dtype)
    dummy = S  # never read when content is off
    BK, BV = max(2, triton.next_power_of_2(K)), max(2, triton.next_power_of_2(V))
    carve_decode_step_kernel[(B, H)](
        x_qkv, conv_state, conv_weight.contiguous(), f.contiguous(), dt_bias.contiguous(),
        A_log.contiguous(), a, w, gate.contiguous(),
        u_down.contiguous() if content else dummy, u_up.contiguous() if content else dummy,
        norm_weight.contiguous(), S, m_prev, o_sum, pos, lengths, y,
        1.0 / math.sqrt(K) if scale is None else float(scale), float(eps),
        H, CH, x_qkv.stride(0), a.stride(0), w.stride(0),
        K=K, V=V, R=R, W=width, CHUNK=chunk_size, BK=BK, BV=BV, BR=max(2, triton.next_power_of_2(R)),
        HAS_CONTENT=content, VEC_W=vec_w,
        num_warps=8 if BK * BV >= 128 * 128 else 4,
    )
    return y
