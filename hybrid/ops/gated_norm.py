"""Gated RMSNorm per head: ``y = x / sqrt(mean(x^2) + eps) * weight * silu(gate)`` over the last axis, in
fp32, returned in the gate's dtype. One Triton kernel each way on CUDA (saving only x and gate), PyTorch
elsewhere."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .backend import next_pow2, use_triton

ROWS_PER_PROGRAM = 16  # rows of D = 128 per program: 16 values per thread at 4 warps


def gated_rms_norm_torch(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """PyTorch definition of :func:`gated_rms_norm` (the CPU path and the kernels' oracle)."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float() * F.silu(gate.float())
    return y.to(gate.dtype)


class _GatedNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gate, weight, eps):
        from .gated_norm_kernels import gated_norm_fwd_kernel

        D = x.shape[-1]
        xc, gc = x.contiguous(), gate.contiguous()
        R = xc.numel() // D
        y = torch.empty(gate.shape, device=x.device, dtype=gate.dtype)
        if R > 0:
            gated_norm_fwd_kernel[(-(-R // ROWS_PER_PROGRAM),)](xc, gc, weight, y, R, eps, D=D, BR=ROWS_PER_PROGRAM,
                                                                BD=next_pow2(D, 16), num_warps=4)
        ctx.save_for_backward(xc, gc, weight)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, dy):
        from .gated_norm_kernels import gated_norm_bwd_kernel

        xc, gc, weight = ctx.saved_tensors
        D = xc.shape[-1]
        R = xc.numel() // D
        nb = -(-R // ROWS_PER_PROGRAM)
        dx = torch.empty_like(xc)
        dgate = torch.empty_like(gc)
        dwp = torch.zeros(max(nb, 1), D, device=xc.device, dtype=torch.float32)
        if R > 0:
            gated_norm_bwd_kernel[(nb,)](xc, gc, weight, dy.contiguous(), dx, dgate, dwp, R, ctx.eps, D=D,
                                         BR=ROWS_PER_PROGRAM, BD=next_pow2(D, 16), num_warps=4)
        return dx, dgate, dwp.sum(0).to(weight.dtype), None


def gated_rms_norm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, *,
                   backend: str = "auto") -> torch.Tensor:
    """``x`` and ``gate`` of one shape ``[..., D]``, ``weight [D]``. Returns ``y`` in the gate's dtype."""
    if x.shape != gate.shape or weight.shape != (x.shape[-1],):
        raise ValueError(f"gated_rms_norm: x and gate must share a shape [..., D] and weight be [D], got "
                         f"{list(x.shape)}, {list(gate.shape)}, {list(weight.shape)}")
    if not use_triton(x, backend):
        return gated_rms_norm_torch(x, gate, weight, eps)
    return _GatedNormFn.apply(x, gate, weight.contiguous(), float(eps))
