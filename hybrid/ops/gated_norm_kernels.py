"""Triton kernels of the gated head RMSNorm ``y = x / rms(x) * weight * silu(gate)`` over rows of ``D``
channels (one row per token and head). The backward recomputes ``1 / rms`` and the SiLU and writes a
partial weight gradient per program (added by the caller)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gated_norm_fwd_kernel(x_ptr, gate_ptr, w_ptr, y_ptr, R, eps, D: tl.constexpr, BR: tl.constexpr,
                          BD: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BR + tl.arange(0, BR).to(tl.int64)
    cols = tl.arange(0, BD)
    cm = cols < D
    m = (rows < R)[:, None] & cm[None, :]
    off = rows[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
    gt = tl.load(gate_ptr + off, mask=m, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 1) / D + eps)
    y = x * rstd[:, None] * w[None, :] * (gt * tl.sigmoid(gt))
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def gated_norm_bwd_kernel(x_ptr, gate_ptr, w_ptr, dy_ptr, dx_ptr, dgate_ptr, dwp_ptr, R, eps, D: tl.constexpr,
                          BR: tl.constexpr, BD: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BR + tl.arange(0, BR).to(tl.int64)
    cols = tl.arange(0, BD)
    cm = cols < D
    m = (rows < R)[:, None] & cm[None, :]
    off = rows[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
    gt = tl.load(gate_ptr + off, mask=m, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + off, mask=m, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 1) / D + eps)
    xh = x * rstd[:, None]
    sg = tl.sigmoid(gt)
    silu = gt * sg
    dgate = dy * xh * w[None, :] * sg * (1.0 + gt * (1.0 - sg))
    dxh = dy * w[None, :] * silu
    dx = rstd[:, None] * (dxh - xh * (tl.sum(dxh * xh, 1) / D)[:, None])
    tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=m)
    tl.store(dgate_ptr + off, dgate.to(dgate_ptr.dtype.element_ty), mask=m)
    tl.store(dwp_ptr + pid * D + cols, tl.sum(dy * xh * silu, 0), mask=cm)
