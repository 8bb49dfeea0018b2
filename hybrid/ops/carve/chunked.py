"""Chunk-parallel CARVE in PyTorch: WY form inside each chunk, sequential over chunks.

Used as the CPU backend of the models and as the oracle for shapes too large for the token loop.
Differentiable by autograd. The algorithm (derived in docs/carve.md), for one chunk with start
state S0, in-chunk cumulative log-decay G_r = g_1 + ... + g_r and e_r = b_r * k_r:

    M_rs = sum_i e_r,i k_s,i exp(G_r,i - G_s,i)      s < r      (strictly lower)
    P_rs = sum_i q_r,i k_s,i exp(G_r,i - G_s,i)      s <= r
    U    = (I + M)^-1 (W*V - (exp(G) * e) S0)          new values, one triangular solve
    O    = scale * ((exp(G) * q) S0 + P U)
    S_C  = exp(G_C) * S0 + (exp(G_C - G) * k)^T U

Every exponent above is a difference G_r - G_s with r >= s, so it is <= 0: nothing overflows,
however strong the decay. M and P are built from 16-token sub-blocks: off-diagonal blocks factor
through the cumulative decay at the end of the earlier block (two factors, each <= 1, one matmul);
diagonal blocks use the exact pairwise differences.
"""

from __future__ import annotations

import torch

from .inputs import CarveState, default_scale, seq_bounds, validate
from .reference import content_term

SUB_BLOCK = 16


def decayed_products(xs: list[torch.Tensor], y: torch.Tensor, G: torch.Tensor) -> list[torch.Tensor]:
    """For each x in ``xs``: D_rs = sum_i x_r,i y_s,i exp(G_r,i - G_s,i) for s <= r, zero above.

    x, y, G: [..., L, K] with G non-increasing along L. Returns [..., L, L] per x. The decay factors
    are computed once and shared by every x (the caller masks the diagonal where it needs s < r)."""
    L = y.shape[-2]
    outs = [y.new_zeros(*y.shape[:-1], L) for _ in xs]
    starts = list(range(0, L, SUB_BLOCK))
    for ia, ra in enumerate(starts):
        ea = min(ra + SUB_BLOCK, L)
        Ga, ya = G[..., ra:ea, :], y[..., ra:ea, :]
        # diagonal block: exact pairwise differences, masked before exp
        diff = Ga.unsqueeze(-2) - Ga.unsqueeze(-3)  # [..., la, la, K], (r, s)
        n = ea - ra
        mask = torch.ones(n, n, dtype=torch.bool, device=y.device).tril()
        decay = torch.exp(torch.where(mask.unsqueeze(-1), diff, torch.full_like(diff, float("-inf"))))
        ydec = ya.unsqueeze(-3) * decay  # [..., r, s, K]
        xa = torch.stack([x[..., ra:ea, :] for x in xs], dim=-1)  # [..., r, K, len(xs)]
        blk = ydec @ xa  # [..., r, s, len(xs)]: one batched product for every x
        for j, out in enumerate(outs):
            out[..., ra:ea, ra:ea] = blk[..., j]
        for rb in starts[:ia]:
            eb = rb + SUB_BLOCK
            ref = G[..., eb - 1 : eb, :]  # cumulative decay at the end of the earlier block
            left = torch.exp(Ga - ref)
            right = (y[..., rb:eb, :] * torch.exp(ref - G[..., rb:eb, :])).transpose(-1, -2)
            for x, out in zip(xs, outs):
                out[..., ra:ea, rb:eb] = (x[..., ra:ea, :] * left) @ right
    return outs


def _segment(q, k, v, g, a, w, u_down, u_up, S0, m_prev, scale, content_grad):
    """One chunk (or partial chunk) for lanes [N, H, L, *]. Returns O [N,H,L,V] and the end state."""
    m = m_prev.detach() if content_grad == "detach" else m_prev
    c = content_term(m, u_down, u_up)
    b = torch.sigmoid(a if c is None else a + c.unsqueeze(2))
    e = b * k
    G = torch.cumsum(g, dim=2)
    M, P = decayed_products([e, q], k, G)
    M = M.tril(-1)  # the coupling is strictly lower triangular
    gam = torch.exp(G)
    z = (w.unsqueeze(-1) if w.dim() == 3 else w) * v
    rhs = z - (gam * e) @ S0
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    U = torch.linalg.solve_triangular(eye + M, rhs, upper=False, unitriangular=True)
    O = scale * ((gam * q) @ S0 + P @ U)
    G_end = G[:, :, -1:, :]
    S_end = gam[:, :, -1, :].unsqueeze(-1) * S0 + (k * torch.exp(G_end - G)).transpose(-1, -2) @ U
    return O, S_end


def _run_lanes(q, k, v, g, a, w, u_down, u_up, st: CarveState, pos0: int, scale, C, content_grad):
    """Lanes with equal length and equal starting position-in-chunk. Tensors are [N, L, H, *]."""
    perm = lambda x: x.transpose(1, 2)  # [N, H, L, *]
    q, k, v, g, a = (perm(x) for x in (q, k, v, g, a))
    w = perm(w)
    L = q.shape[2]
    S, m_prev, o_sum = st.S, st.m_prev, st.o_sum
    # segment lengths: up to the first chunk end, then whole chunks, then the rest. The inputs are split
    # once (autograd then joins their gradients in one concatenation, where a slice per segment would
    # zero-fill a full-length gradient for each)
    sizes, t, pos = [], 0, pos0
    while t < L:
        sizes.append(min(L - t, C - pos))
        t += sizes[-1]
        pos = (pos + sizes[-1]) % C
    parts = [torch.split(x, sizes, dim=2) for x in (q, k, v, g, a, w)]
    outs = []
    pos = pos0
    for i, ln in enumerate(sizes):
        O, S = _segment(*(p[i] for p in parts), u_down, u_up, S, m_prev, scale, content_grad)
        outs.append(O)
        o_sum = o_sum + O.sum(dim=2)
        pos += ln
        if pos == C:
            m_prev, o_sum, pos = o_sum / C, torch.zeros_like(o_sum), 0
    o = torch.cat(outs, dim=2).transpose(1, 2) if outs else q.new_zeros(q.shape[0], 0, q.shape[1], v.shape[-1])
    n = q.shape[0]
    return o, CarveState(S, m_prev, o_sum, torch.full((n,), pos, dtype=torch.long, device=q.device))


def carve_chunked(
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
) -> tuple[torch.Tensor, CarveState | None]:
    """Chunked CARVE with the options of :func:`carve_reference`.

    Computes in float64 for float64 inputs, else float32; returns ``o`` in the input dtype and the
    final state in float32 (float64 for float64 inputs)."""
    shp = validate(
        q, k, v, g, a, w, u_down, u_up,
        chunk_size=chunk_size, content_grad=content_grad,
        initial_state=initial_state, cu_seqlens=cu_seqlens,
    )
    sc = default_scale(shp.K, scale)
    out_dtype = q.dtype
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v, g, a, w = (x.to(cdt) for x in (q, k, v, g, a, w))
    if u_down is not None:
        u_down, u_up = u_down.to(cdt), u_up.to(cdt)
    if initial_state is None:
        init = CarveState.zeros(shp.n_seq, shp.H, shp.K, shp.V, device=q.device, dtype=cdt)
    else:
        init = CarveState(initial_state.S.to(cdt), initial_state.m_prev.to(cdt),
                          initial_state.o_sum.to(cdt), initial_state.pos.to(q.device))
    pos_list = init.pos.tolist()

    def lane_state(idx):
        return CarveState(init.S[idx], init.m_prev[idx], init.o_sum[idx], init.pos[idx])

    finals: list[tuple[list[int], CarveState]] = []
    if cu_seqlens is None:
        o = q.new_zeros(shp.B, shp.T, shp.H, shp.V)
        for p in sorted(set(pos_list)):  # lanes that start at the same position in their chunk run together
            idx = [i for i, pp in enumerate(pos_list) if pp == p]
            it = torch.tensor(idx, device=q.device)
            o_l, st = _run_lanes(q[it], k[it], v[it], g[it], a[it], w[it], u_down, u_up,
                                 lane_state(it), p, sc, chunk_size, content_grad)
            o = o.index_copy(0, it, o_l) if len(idx) < shp.B else o_l
            finals.append((idx, st))
    else:
        pieces = []
        for i, (_, s, e) in enumerate(seq_bounds(shp, cu_seqlens)):
            it = torch.tensor([i], device=q.device)
            o_l, st = _run_lanes(q[:, s:e], k[:, s:e], v[:, s:e], g[:, s:e], a[:, s:e], w[:, s:e],
                                 u_down, u_up, lane_state(it), pos_list[i], sc, chunk_size, content_grad)
            pieces.append(o_l)
            finals.append(([i], st))
        o = torch.cat(pieces, dim=1)

    final = None
    if output_final_state:
        order = [i for idx, _ in finals for i in idx]
        inv = torch.empty(len(order), dtype=torch.long, device=q.device)
        inv[torch.tensor(order, device=q.device)] = torch.arange(len(order), device=q.device)
        cat = lambda name: torch.cat([getattr(st, name) for _, st in finals])[inv]
        final = CarveState(cat("S"), cat("m_prev"), cat("o_sum"), cat("pos"))
    return o.to(out_dtype), final
