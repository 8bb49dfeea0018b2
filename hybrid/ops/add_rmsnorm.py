"""Residual add and RMSNorm in one Triton kernel, for the one-token decode step.

    h' = h + delta          (rounded to h's dtype, as the eager residual add rounds it)
    y  = h' / sqrt(mean(h'^2) + eps) * weight      (fp32 inside, y in h's dtype)

One program per row; rows are short (d_model) in decoding, so one block holds a row. Returns the new
residual stream and the normalised input of the next sub-layer."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def add_rmsnorm_kernel(h, delta, h_out, weight, y, N, eps, HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < N
    x = tl.load(h + row * N + cols, mask=m, other=0.0).to(tl.float32)
    if HAS_DELTA:
        x += tl.load(delta + row * N + cols, mask=m, other=0.0).to(tl.float32)
        x = x.to(h_out.dtype.element_ty).to(tl.float32)
        tl.store(h_out + row * N + cols, x.to(h_out.dtype.element_ty), mask=m)
    inv = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    out = x * inv * tl.load(weight + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(y + row * N + cols, out.to(y.dtype.element_ty), mask=m)


def add_rmsnorm(h: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float):
    """``(h + delta, RMSNorm(h + delta) * weight)`` over the last axis (``delta`` None: no add)."""
    N = h.shape[-1]
    if weight.shape != (N,) or (delta is not None and delta.shape != h.shape):
        raise ValueError(f"add_rmsnorm: h {tuple(h.shape)}, delta {None if delta is None else tuple(delta.shape)} "
                         f"and weight {tuple(weight.shape)} do not match")
    hc = h.contiguous()
    rows = hc.numel() // N
    h_out = torch.empty_like(hc) if delta is not None else hc
    y = torch.empty_like(hc)
    add_rmsnorm_kernel[(rows,)](hc, delta.contiguous() if delta is not None else hc, h_out, weight.contiguous(), y,
                                N, float(eps), HAS_DELTA=delta is not None,
                                BLOCK=triton.next_power_of_2(N), num_warps=4 if N <= 4096 else 8)
    return h_out, y
