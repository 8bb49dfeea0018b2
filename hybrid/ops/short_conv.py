"""Causal depthwise short convolution + SiLU of the projected ``[q | k | v]`` row, with the L2 norm of every
q and k head, carried state and packed sequences: one Triton kernel each way on CUDA, PyTorch elsewhere.

``short_conv`` is the plain convolution (no activation): ``y[t] = sum_i weight[:, i] * x[t - (c - 1) + i]``
for a width-``c`` kernel, the last tap on the current token. Inputs before a sequence's start come from
its carried state (the previous ``c - 1`` inputs, oldest first) or are zero. With ``cu_seqlens`` (batch
1, packed sequences) every sequence starts afresh (or from its own carried state).

``conv_qkv`` applies it to the ``[q | k | v]`` channels, then SiLU, then (``normalize_qk``) divides each
q and k head by its L2 norm (``F.normalize``, eps 1e-6); ``conv_qkv_step`` is its one-token decode step,
which shifts the carried state in place. The Triton path keeps no activation for the backward: it saves
the input and recomputes the convolution, SiLU and norms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backend import next_pow2, use_triton

NORM_EPS = 1e-6
# tokens per program of the forward and dx kernels (16 x 128 channels: about 110 registers for sm_90 at
# 4 warps, against 255 and spills at 64 tokens) and channels per program of the dx pass
TOKENS_PER_PROGRAM = 16
CHANNELS_PER_PROGRAM = 128
# the backward's first pass: DPRE_BLOCKS blocks of DPRE_TOKENS tokens per program, so that its
# weight-gradient partial sums [programs, C, W] stay small (6.3 MB at 32768 tokens x 3072 channels).
# Measured alone at 32768 tokens x 8 heads of 128, bf16 (H100, 4 warps; tokens x blocks): 0.66 ms at
# 32 x 8, 0.69 at 32 x 4, 0.72 at 16 x 8, 0.80 at 16 x 4, 0.75 at 64 x 1 (8 warps: 0.72 at 64 x 8,
# slower at every other tiling)
DPRE_BLOCKS = 8
DPRE_TOKENS = 32


def doc_index(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence id and position inside its sequence for every packed token. Both int64 ``[total]``."""
    cu = cu_seqlens.to(torch.long)
    t = torch.arange(total, device=cu.device)
    # contiguous: inductor cannot lower searchsorted over a sliced view (torch.compile on CUDA)
    doc = torch.searchsorted(cu[1:].contiguous(), t, right=True)
    return doc, t - cu[doc]


def _taps(ext: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
    """``y[t] = sum_i weight[:, i] * ext[t + i]`` for t < n along dim -2 of ``ext [..., n + width - 1, C]``:
    the causal depthwise convolution as one multiply-add per tap, in the channels-last layout (on a CPU
    several times faster forward and backward than a grouped conv1d over the transposed layout)."""
    y = ext[..., 0:n, :] * weight[:, 0]
    for i in range(1, weight.shape[1]):
        y = y + ext[..., i:i + n, :] * weight[:, i]
    return y


def short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    cu_seqlens: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal depthwise convolution (no activation), in PyTorch.

    x: ``[B, T, C]``; weight: ``[C, c]``; initial_state: ``[N, C, c - 1]`` (N = B, or the number of
    packed sequences). Returns ``y [B, T, C]`` and, if asked, the final state ``[N, C, c - 1]``."""
    B, T, C = x.shape
    width = weight.shape[1]
    if cu_seqlens is None:
        if initial_state is None:
            ext = F.pad(x, (0, 0, width - 1, 0))
        else:
            ext = torch.cat([initial_state.transpose(1, 2).to(x.dtype), x], dim=1)
        y = x if T == 0 else _taps(ext, weight.to(x.dtype), T)
        final = ext[:, ext.shape[1] - (width - 1):].transpose(1, 2).contiguous() if output_final_state else None
        return y, final

    if B != 1:
        raise ValueError(f"short_conv: with cu_seqlens the batch dimension must be 1, got {B}")
    # One convolution over all sequences: every sequence gets ``width - 1`` slots in front of it, filled
    # with its carried state (or zeros), so no tap reaches into the previous sequence. The same three
    # launches (scatter, depthwise conv, gather) whatever the number of sequences.
    p = width - 1
    cu = cu_seqlens.to(torch.long)
    n = cu.numel() - 1
    doc, _ = doc_index(cu_seqlens, T)
    tok_at = torch.arange(T, device=x.device) + (doc + 1) * p  # where token t sits in the slotted buffer
    ext = x.new_zeros(T + n * p, C)
    if p and initial_state is not None:
        slot0 = cu[:-1] + torch.arange(n, device=x.device) * p  # first slot of sequence j
        slots = (slot0[:, None] + torch.arange(p, device=x.device)).reshape(-1)
        ext = ext.index_copy(0, slots, initial_state.transpose(1, 2).reshape(n * p, C).to(x.dtype))
    ext = ext.index_copy(0, tok_at, x[0])
    if T == 0:
        y = x[0]
    else:
        y = _taps(ext, weight.to(x.dtype), T + (n - 1) * p).index_select(0, tok_at - p)
    final = None
    if output_final_state:
        if p == 0:
            final = x.new_zeros(n, C, 0)
        else:  # the last width - 1 entries of each sequence's slots + tokens, oldest first
            last0 = cu[1:] + torch.arange(n, device=x.device) * p
            idx = (last0[:, None] + torch.arange(p, device=x.device)).reshape(-1)
            final = ext.index_select(0, idx).view(n, p, C).transpose(1, 2).contiguous()
    return y.unsqueeze(0), final


def _check(x, weight, heads, key_dim, value_dim, initial_state, cu_seqlens):
    if x.dim() != 3:
        raise ValueError(f"conv_qkv: x must be [B, T, C], got {list(x.shape)}")
    C = 2 * heads * key_dim + heads * value_dim
    if x.shape[-1] != C or weight.dim() != 2 or weight.shape[0] != C:
        raise ValueError(f"conv_qkv: x [B, T, {C}] and weight [{C}, width] expected for {heads} heads of "
                         f"{key_dim}/{value_dim}, got x {list(x.shape)}, weight {list(weight.shape)}")
    if cu_seqlens is not None and x.shape[0] != 1:
        raise ValueError(f"conv_qkv: with cu_seqlens the batch dimension must be 1, got {x.shape[0]}")
    n = x.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None and initial_state.shape != (n, C, weight.shape[1] - 1):
        raise ValueError(f"conv_qkv: initial_state must be [{n}, {C}, {weight.shape[1] - 1}], "
                         f"got {list(initial_state.shape)}")


def _split(y, B, T, H, K, V, normalize_qk):
    q, k, v = torch.split(y, [H * K, H * K, H * V], dim=-1)
    q, k, v = q.reshape(B, T, H, K), k.reshape(B, T, H, K), v.reshape(B, T, H, V)
    if normalize_qk:
        q = F.normalize(q.float(), dim=-1, eps=NORM_EPS).to(y.dtype)
        k = F.normalize(k.float(), dim=-1, eps=NORM_EPS).to(y.dtype)
    return q, k, v


def conv_qkv_torch(x, weight, heads, key_dim, value_dim, *, cu_seqlens=None, initial_state=None,
                   output_final_state=False, normalize_qk=True):
    """PyTorch definition of :func:`conv_qkv` (the CPU path and the kernels' oracle)."""
    B, T, _ = x.shape
    y, final = short_conv(x, weight, cu_seqlens=cu_seqlens, initial_state=initial_state,
                          output_final_state=output_final_state)
    q, k, v = _split(F.silu(y), B, T, heads, key_dim, value_dim, normalize_qk)
    return q, k, v, final


def _final_state(x, s0, cu, W, B, T):
    """The last W - 1 inputs of every sequence (from its carried state where it is shorter), [N, C, W-1]."""
    C = x.shape[-1]
    p = W - 1
    n = B if cu is None else cu.numel() - 1
    if p == 0:
        return x.new_zeros(n, C, 0)
    starts, ends = (cu[:-1], cu[1:]) if cu is not None else (
        torch.arange(B, device=x.device) * T, torch.arange(1, B + 1, device=x.device) * T)
    pos = ends[:, None] - p + torch.arange(p, device=x.device)  # [N, p] packed positions
    flat = x.reshape(-1, C)
    inside = pos >= starts[:, None]
    out = flat.index_select(0, pos.clamp(min=0).reshape(-1)).view(-1, p, C)
    if s0 is not None:
        slot = (pos - starts[:, None] + p).clamp(min=0, max=max(p - 1, 0))
        from_state = torch.gather(s0.to(x.dtype), 2, slot[:, None, :].expand(-1, C, -1)).transpose(1, 2)
    else:
        from_state = torch.zeros_like(out)
    return torch.where(inside[..., None], out, from_state).transpose(1, 2).contiguous()


class _ConvQKVFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, s0, cu, doc, meta):
        from .short_conv_kernels import short_conv_fwd_kernel

        B, T, H, K, V, W, norm, want_final = meta
        C = x.shape[-1]
        weight = weight.contiguous()
        x2 = x.reshape(B * T, C)  # a view for a slice of a wider projection
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        TT = B * T
        q = torch.empty(B, T, H, K, device=x.device, dtype=x.dtype)
        k = torch.empty_like(q)
        v = torch.empty(B, T, H, V, device=x.device, dtype=x.dtype)
        BD = next_pow2(max(K, V), 16)
        dummy = torch.zeros(1, device=x.device, dtype=torch.int64)
        if TT > 0:
            short_conv_fwd_kernel[(triton_cdiv(TT, TOKENS_PER_PROGRAM), 3 * H)](
                x2, weight, s0 if s0 is not None else x2, q, k, v, cu if cu is not None else dummy,
                doc if doc is not None else dummy, TT, max(T, 1), x2.stride(0), C, H, NORM_EPS, K=K, V=V, W=W,
                VARLEN=cu is not None, HAS_STATE=s0 is not None, NORM=norm, BT=TOKENS_PER_PROGRAM, BD=BD,
                num_warps=4)
        ctx.save_for_backward(x2, weight, s0, cu, doc)
        ctx.meta = meta
        if not want_final:
            return q, k, v, None
        return q, k, v, _final_state(x2, s0, cu, W, B, T)

    @staticmethod
    def backward(ctx, dq, dk, dv, dfinal):
        from .short_conv_kernels import short_conv_dpre_kernel, short_conv_dx_kernel

        x2, weight, s0, cu, doc = ctx.saved_tensors
        B, T, H, K, V, W, norm, _ = ctx.meta
        TT, C = x2.shape
        dq = x2.new_zeros(B, T, H, K) if dq is None else dq.contiguous()
        dk = x2.new_zeros(B, T, H, K) if dk is None else dk.contiguous()
        dv = x2.new_zeros(B, T, H, V) if dv is None else dv.contiguous()
        nblk = min(DPRE_BLOCKS, max(triton_cdiv(TT, DPRE_TOKENS), 1))
        nb = triton_cdiv(TT, DPRE_TOKENS * nblk)
        dpre = torch.empty(TT, C, device=x2.device, dtype=x2.dtype)
        dx = torch.empty(TT, C, device=x2.device, dtype=x2.dtype)
        dwp = torch.empty(max(nb, 1), C, W, device=x2.device, dtype=torch.float32)
        dummy = torch.zeros(1, device=x2.device, dtype=torch.int64)
        cu_arg = cu if cu is not None else dummy
        doc_arg = doc if doc is not None else dummy
        if TT > 0:
            for tap0 in range(0, W, 4):  # four taps' weight gradients per launch; the first also writes dpre
                short_conv_dpre_kernel[(nb, 3 * H)](
                    x2, weight, s0 if s0 is not None else x2, dq, dk, dv, dpre, dwp, cu_arg, doc_arg, TT, max(T, 1),
                    x2.stride(0), C, H, NORM_EPS, K=K, V=V, W=W, VARLEN=cu is not None, HAS_STATE=s0 is not None,
                    NORM=norm, BT=DPRE_TOKENS, BD=next_pow2(max(K, V), 16), NBLK=nblk, TAP0=tap0,
                    STORE_DP=tap0 == 0, num_warps=4)
            short_conv_dx_kernel[(triton_cdiv(TT, TOKENS_PER_PROGRAM), triton_cdiv(C, CHANNELS_PER_PROGRAM))](
                dpre, weight, dx, cu_arg, doc_arg, TT, max(T, 1), C, W=W, VARLEN=cu is not None,
                BT=TOKENS_PER_PROGRAM, BC=CHANNELS_PER_PROGRAM, num_warps=4)
            dw = dwp.sum(0).to(weight.dtype)
        else:
            dw = torch.zeros_like(weight)
        ds0 = None
        if s0 is not None and ctx.needs_input_grad[2]:
            ds0 = _state_grad(dpre, weight, cu, B, T, W) if TT > 0 else torch.zeros_like(s0, dtype=torch.float32)
        if dfinal is not None and W > 1:
            dx, ds0 = _add_final_grad(dx, ds0, dfinal, cu, B, T, W)
        if ds0 is not None:
            ds0 = ds0.to(s0.dtype)
        return dx.view(B, T, C), dw, ds0, None, None, None


def _state_grad(dpre, weight, cu, B, T, W):
    """Gradient of the carried state [N, C, W-1] (fp32): slot j (position start - (W-1) + j) feeds tap i of
    token start + j - i for i <= j, inside the sequence."""
    C = dpre.shape[1]
    dev = dpre.device
    starts, ends = (cu[:-1], cu[1:]) if cu is not None else (
        torch.arange(B, device=dev) * T, torch.arange(1, B + 1, device=dev) * T)
    j = torch.arange(W - 1, device=dev)
    i = torch.arange(W, device=dev)
    tgt = starts[:, None, None] + j[None, :, None] - i[None, None, :]  # [N, j, i]
    ok = (j[:, None] >= i[None, :])[None] & (tgt < ends[:, None, None])
    dp = dpre.index_select(0, torch.where(ok, tgt, 0).reshape(-1)).view(*tgt.shape, C).float()
    dp = dp * ok[..., None]
    return torch.einsum("njic,ci->ncj", dp, weight.float())


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _add_final_grad(dx, ds0, dfinal, cu, B, T, W):
    """Gradient of the final state into the inputs (and the carried state where a sequence is shorter)."""
    C = dx.shape[-1]
    p = W - 1
    dev = dx.device
    starts, ends = (cu[:-1], cu[1:]) if cu is not None else (
        torch.arange(B, device=dev) * T, torch.arange(1, B + 1, device=dev) * T)
    pos = ends[:, None] - p + torch.arange(p, device=dev)
    inside = pos >= starts[:, None]
    g = dfinal.transpose(1, 2)  # [N, p, C]
    flat = dx.reshape(-1, C).index_put((pos[inside],), g[inside].to(dx.dtype), accumulate=True).view_as(dx)
    if ds0 is not None:
        slot = pos - starts[:, None] + p
        n_idx = torch.arange(pos.shape[0], device=dev)[:, None].expand_as(pos)
        out = inside.logical_not()
        d = ds0.transpose(1, 2).index_put((n_idx[out], slot[out]), g[out].to(ds0.dtype), accumulate=True)
        ds0 = d.transpose(1, 2)
    return flat, ds0


def conv_qkv(x: torch.Tensor, weight: torch.Tensor, heads: int, key_dim: int, value_dim: int, *,
             cu_seqlens: torch.Tensor | None = None, initial_state: torch.Tensor | None = None,
             output_final_state: bool = False, normalize_qk: bool = True, backend: str = "auto"):
    """Short convolution + SiLU of ``x [B, T, 2HK + HV]`` (``[q | k | v]`` channels; the last axis may be a
    strided slice of a wider projection), then the L2 norm of every q and k head (``normalize_qk``).

    weight ``[C, c]``; initial_state ``[N, C, c - 1]``. Returns ``q, k [B, T, H, K]``, ``v [B, T, H, V]``
    in x's dtype and the final state ``[N, C, c - 1]`` (or None). ``backend``: see ``backend.use_triton``."""
    _check(x, weight, heads, key_dim, value_dim, initial_state, cu_seqlens)
    if not use_triton(x, backend):
        return conv_qkv_torch(x, weight, heads, key_dim, value_dim, cu_seqlens=cu_seqlens,
                              initial_state=initial_state, output_final_state=output_final_state,
                              normalize_qk=normalize_qk)
    B, T, C = x.shape
    W = weight.shape[1]
    cu = doc = None
    if cu_seqlens is not None:
        cu = cu_seqlens.to(torch.int64).contiguous()
        doc = doc_index(cu, T)[0]
    s0 = initial_state.contiguous() if initial_state is not None else None
    meta = (B, T, heads, key_dim, value_dim, W, bool(normalize_qk), bool(output_final_state))
    return _ConvQKVFn.apply(x, weight, s0, cu, doc, meta)


def conv_qkv_step(x: torch.Tensor, weight: torch.Tensor, state: torch.Tensor, heads: int, key_dim: int,
                  value_dim: int, *, normalize_qk: bool = True, backend: str = "auto"):
    """One token per sequence: ``x [N, C]`` with the carried ``state [N, C, c - 1]``, which is shifted in
    place (oldest input dropped, this token appended). Returns ``q, k [N, H, K]``, ``v [N, H, V]``."""
    N, C = x.shape
    W = weight.shape[1]
    if state.shape != (N, C, W - 1):
        raise ValueError(f"conv_qkv_step: state must be [{N}, {C}, {W - 1}], got {list(state.shape)}")
    H, K, V = heads, key_dim, value_dim
    if not use_triton(x, backend):
        y = (state.to(x.dtype) * weight[:, :-1].to(x.dtype)).sum(-1) + x * weight[:, -1].to(x.dtype)
        if W > 1:
            state.copy_(torch.cat([state[:, :, 1:], x.unsqueeze(-1).to(state.dtype)], dim=-1))
        q, k, v = _split(F.silu(y).unsqueeze(1), N, 1, H, K, V, normalize_qk)
        return q[:, 0], k[:, 0], v[:, 0]
    from .short_conv_kernels import short_conv_step_kernel

    if not state.is_contiguous():
        raise ValueError("conv_qkv_step: the state must be contiguous (it is updated in place)")
    if x.stride(-1) != 1:
        x = x.contiguous()
    q = torch.empty(N, H, K, device=x.device, dtype=x.dtype)
    k = torch.empty_like(q)
    v = torch.empty(N, H, V, device=x.device, dtype=x.dtype)
    if N > 0:
        short_conv_step_kernel[(N, 3 * H)](x, weight.contiguous(), state, q, k, v, x.stride(0), C, H, NORM_EPS,
                                           K=K, V=V, W=W, NORM=bool(normalize_qk), BD=next_pow2(max(K, V), 16),
                                           num_warps=4)
    return q, k, v
