"""The CARVE operator as its plain recurrence, one token at a time.

This file *is* the definition (see docs/carve.md). It favours reading over speed: every other
implementation (chunked PyTorch, Triton, decode) is tested against it, in float64.

Per head, at position t of chunk n = t // C (counted from the start of each sequence):

    c_n  = U_up (U_down m_{n-1})             m_{n-1}: mean of o over chunk n-1, m_{-1} = 0
    b_t  = sigmoid(a_t + c_n)                erase gate, key axis
    S'   = Diag(exp g_t) S_{t-1}
    S_t  = S' + k_t (w_t * v_t - S'^T (b_t * k_t))^T
    o_t  = S_t^T (scale * q_t)
"""

from __future__ import annotations

import torch

from .inputs import CarveState, default_scale, seq_bounds, validate


def content_term(m_prev: torch.Tensor, u_down: torch.Tensor | None, u_up: torch.Tensor | None):
    """c = U_up (U_down m) per head. m_prev: [N, H, V] -> [N, H, K] (None when content is off)."""
    if u_down is None:
        return None
    low = torch.einsum("hrv,nhv->nhr", u_down.to(m_prev.dtype), m_prev)
    return torch.einsum("hkr,nhr->nhk", u_up.to(m_prev.dtype), low)


def carve_step(
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    v_t: torch.Tensor,
    g_t: torch.Tensor,
    a_t: torch.Tensor,
    w_t: torch.Tensor,
    u_down: torch.Tensor | None,
    u_up: torch.Tensor | None,
    state: CarveState,
    *,
    scale: float,
    chunk_size: int,
    content_grad: str = "full",
) -> tuple[torch.Tensor, CarveState]:
    """One token for N independent lanes. Inputs are [N, H, K] / [N, H, V]; w_t is [N, H] or [N, H, V].

    Computes in the dtype of ``state.S``. Returns o_t [N, H, V] and the new state (out of place,
    so autograd can run through a sequence of steps)."""
    dt = state.S.dtype
    q_t, k_t, v_t, g_t, a_t, w_t = (x.to(dt) for x in (q_t, k_t, v_t, g_t, a_t, w_t))
    m = state.m_prev.detach() if content_grad == "detach" else state.m_prev
    c = content_term(m, u_down, u_up)
    logits = a_t if c is None else a_t + c
    b = torch.sigmoid(logits)
    S = torch.exp(g_t).unsqueeze(-1) * state.S  # Diag(exp g) S
    read = torch.einsum("nhkv,nhk->nhv", S, b * k_t)  # S'^T (b * k)
    write = (w_t.unsqueeze(-1) if w_t.dim() == 2 else w_t) * v_t
    S = S + k_t.unsqueeze(-1) * (write - read).unsqueeze(-2)
    o = torch.einsum("nhkv,nhk->nhv", S, q_t * scale)

    o_sum = state.o_sum + o
    pos = state.pos + 1
    full = (pos == chunk_size).view(-1, 1, 1)
    m_prev = torch.where(full, o_sum / chunk_size, state.m_prev)
    o_sum = torch.where(full, torch.zeros_like(o_sum), o_sum)
    pos = torch.where(pos == chunk_size, torch.zeros_like(pos), pos)
    return o, CarveState(S, m_prev, o_sum, pos)


def carve_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    a: torch.Tensor,
    w: torch.Tensor,
    u_down: torch.Tensor | None = None,
    u_up: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    chunk_size: int = 64,
    content_grad: str = "full",
    initial_state: CarveState | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, CarveState | None]:
    """Token-by-token CARVE. Returns ``o`` [B, T, H, V] in ``dtype`` and the final state (or None).

    ``u_down``/``u_up`` None means content off. Differentiable by autograd in every input."""
    shp = validate(
        q, k, v, g, a, w, u_down, u_up,
        chunk_size=chunk_size, content_grad=content_grad,
        initial_state=initial_state, cu_seqlens=cu_seqlens,
    )
    sc = default_scale(shp.K, scale)
    dev = q.device
    if u_down is not None:
        u_down, u_up = u_down.to(dtype), u_up.to(dtype)
    outs, finals = [], []
    for i, (bi, start, end) in enumerate(seq_bounds(shp, cu_seqlens)):
        if initial_state is None:
            st = CarveState.zeros(1, shp.H, shp.K, shp.V, device=dev, dtype=dtype)
        else:
            s0 = initial_state
            st = CarveState(
                s0.S[i : i + 1].to(dtype), s0.m_prev[i : i + 1].to(dtype),
                s0.o_sum[i : i + 1].to(dtype), s0.pos[i : i + 1].to(dev),
            )
        seq_out = []
        for t in range(start, end):
            o_t, st = carve_step(
                q[bi : bi + 1, t], k[bi : bi + 1, t], v[bi : bi + 1, t], g[bi : bi + 1, t],
                a[bi : bi + 1, t], w[bi : bi + 1, t], u_down, u_up, st,
                scale=sc, chunk_size=chunk_size, content_grad=content_grad,
            )
            seq_out.append(o_t)
        if seq_out:
            outs.append(torch.stack(seq_out, dim=1))  # [1, L, H, V]
        finals.append(st)
    if cu_seqlens is None:
        o = torch.cat(outs, dim=0) if outs else q.new_zeros(shp.B, 0, shp.H, shp.V, dtype=dtype)
    else:
        o = torch.cat(outs, dim=1) if outs else q.new_zeros(1, 0, shp.H, shp.V, dtype=dtype)
    final = None
    if output_final_state:
        final = CarveState(
            torch.cat([f.S for f in finals]), torch.cat([f.m_prev for f in finals]),
            torch.cat([f.o_sum for f in finals]), torch.cat([f.pos for f in finals]),
        )
    return o, final
