"""RMSNorm and the head-wise RMSNorm gated by SiLU used at the output of the recurrent layers."""

from __future__ import annotations

import torch
from torch import nn

from hybrid.ops.gated_norm import gated_rms_norm

# an autograd Function over Triton kernels on CUDA: eager under torch.compile, as the ops of the
# recurrent layer are
_gated_rms_norm = torch.compiler.disable(gated_rms_norm)


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last axis, computed in fp32, returned in fp32."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


class RMSNorm(nn.Module):
    """y = x / rms(x) * weight over the last axis (weight starts at one)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (rms_normalize(x, self.eps) * self.weight.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class GatedHeadRMSNorm(nn.Module):
    """Per-head RMSNorm of ``x [..., H, V]`` (one weight of size V shared by the heads), times SiLU(gate)."""

    def __init__(self, head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(head_dim))

    def forward(self, x: torch.Tensor, gate: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """y in the gate's dtype; one fused kernel each way on CUDA (hybrid.ops.gated_norm)."""
        return _gated_rms_norm(x, gate, self.weight, self.eps, backend=backend)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
