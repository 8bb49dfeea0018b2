"""The gates of the CARVE / GDN-2 layer in one kernel each way: the per-key-channel log-decay
``g = -exp(A_log[h]) * softplus(f + dt_bias)`` (fp32, <= 0) and the write gate ``w = sigmoid(logits)``.

On CUDA (Triton) the backward recomputes both from ``f`` and the logits (kept in their own, usually
bf16, dtype): no fp32 ``[B, T, H, K]`` tensor is kept for the backward. PyTorch elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backend import next_pow2, use_triton

TOKENS_PER_PROGRAM = 32  # x 128 channels at 8 warps: no spills for sm_90 (64 needed 255 registers)


def gates_torch(f, dt_bias, A_log, w_logits):
    """PyTorch definition of :func:`gates` (the CPU path and the kernels' oracle)."""
    B, T, H, K = f.shape
    z = f.float() + dt_bias.float().view(H, K)
    g = -torch.exp(A_log.float()).view(H, 1) * F.softplus(z)
    return g, torch.sigmoid(w_logits)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``[B, T, ...]`` as ``[B*T, n]`` with unit stride along n (a view for a slice of a wider projection)."""
    t2 = t.reshape(t.shape[0] * t.shape[1], -1)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


class _GatesFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, dt_bias, A_log, w_logits):
        from .gates_kernels import gates_fwd_kernel

        B, T, H, K = f.shape
        f2, wl2 = _rows(f), _rows(w_logits)
        TT = B * T
        WD = wl2.shape[1] // H
        g = torch.empty(B, T, H, K, device=f.device, dtype=torch.float32)
        w = torch.empty(w_logits.shape, device=f.device, dtype=w_logits.dtype)
        if TT > 0:
            gates_fwd_kernel[(-(-TT // TOKENS_PER_PROGRAM), H)](
                f2, dt_bias, A_log, wl2, g, w, TT, f2.stride(0), wl2.stride(0), H, K=K, WD=WD,
                BT=TOKENS_PER_PROGRAM, BK=next_pow2(K, 16), BW=next_pow2(WD, 2), num_warps=8)
        ctx.save_for_backward(f2, dt_bias, A_log, wl2)
        ctx.shape = (B, T, H, K, WD, f.dtype, w_logits.shape)
        return g, w

    @staticmethod
    def backward(ctx, dg, dw):
        from .gates_kernels import gates_bwd_kernel

        f2, dt_bias, A_log, wl2 = ctx.saved_tensors
        B, T, H, K, WD, f_dtype, w_shape = ctx.shape
        TT = B * T
        nb = -(-TT // TOKENS_PER_PROGRAM)
        dev = f2.device
        df = torch.zeros(B, T, H * K, device=dev, dtype=f_dtype) if dg is None else torch.empty(
            B, T, H * K, device=dev, dtype=f_dtype)
        dwl = torch.zeros(w_shape, device=dev, dtype=wl2.dtype) if dw is None else torch.empty(
            w_shape, device=dev, dtype=wl2.dtype)
        ddt = torch.zeros(max(nb, 1), H * K, device=dev, dtype=torch.float32)
        da = torch.zeros(max(nb, 1), H, device=dev, dtype=torch.float32)
        dummy = torch.zeros(1, device=dev, dtype=torch.float32)
        if TT > 0 and (dg is not None or dw is not None):
            gates_bwd_kernel[(nb, H)](
                f2, dt_bias, A_log, wl2, dg.contiguous() if dg is not None else dummy,
                dw.contiguous() if dw is not None else dummy, df, dwl, ddt, da, TT, f2.stride(0), wl2.stride(0), H,
                HAS_DG=dg is not None, HAS_DW=dw is not None, K=K, WD=WD, BT=TOKENS_PER_PROGRAM,
                BK=next_pow2(K, 16), BW=next_pow2(WD, 2), num_warps=8)
        return (df.view(B, T, H, K), ddt.sum(0).to(dt_bias.dtype), da.sum(0).to(A_log.dtype), dwl)


def gates(f: torch.Tensor, dt_bias: torch.Tensor, A_log: torch.Tensor, w_logits: torch.Tensor, *,
          backend: str = "auto"):
    """``f [B, T, H, K]`` (decay logits), ``dt_bias [H*K]``, ``A_log [H]``, ``w_logits [B, T, H]`` or
    ``[B, T, H, V]``. Returns ``g [B, T, H, K]`` fp32 and ``w`` (the logits' shape and dtype)."""
    B, T, H, K = f.shape
    if dt_bias.numel() != H * K or A_log.numel() != H:
        raise ValueError(f"gates: dt_bias must have {H * K} and A_log {H} entries for f {list(f.shape)}, got "
                         f"{dt_bias.numel()} and {A_log.numel()}")
    if w_logits.shape[:3] != (B, T, H) or w_logits.dim() not in (3, 4):
        raise ValueError(f"gates: w_logits must be [B, T, H] or [B, T, H, V] = [{B}, {T}, {H}, ...], "
                         f"got {list(w_logits.shape)}")
    if not use_triton(f, backend):
        return gates_torch(f, dt_bias, A_log, w_logits)
    return _GatesFn.apply(f, dt_bias.contiguous(), A_log.contiguous(), w_logits)
