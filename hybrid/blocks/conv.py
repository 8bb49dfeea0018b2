"""Causal depthwise short convolution with a carried state and packed-sequence (varlen) support.

``y[t] = sum_i weight[:, i] * x[t - (c - 1) + i]`` for a width-``c`` kernel: the last tap multiplies the
current token. Inputs before a sequence's start come from its carried state (the previous ``c - 1``
inputs, oldest first) or are zero. With ``cu_seqlens`` (batch 1, packed sequences) every sequence
starts afresh (or from its own carried state): no token sees another sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def doc_index(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence id and position inside its sequence for every packed token. Both int64 ``[total]``."""
    cu = cu_seqlens.to(torch.long)
    t = torch.arange(total, device=cu.device)
    doc = torch.searchsorted(cu[1:], t, right=True)
    return doc, t - cu[doc]


def short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    cu_seqlens: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal depthwise convolution (no activation).

    x: ``[B, T, C]``; weight: ``[C, c]``; initial_state: ``[N, C, c - 1]`` (N = B, or the number of
    packed sequences). Returns ``y [B, T, C]`` and, if asked, the final state ``[N, C, c - 1]``."""
    B, T, C = x.shape
    width = weight.shape[1]
    if cu_seqlens is None:
        if initial_state is None:
            ext = F.pad(x, (0, 0, width - 1, 0))
        else:
            ext = torch.cat([initial_state.transpose(1, 2).to(x.dtype), x], dim=1)
        if T == 0:
            y = x
        else:
            y = F.conv1d(ext.transpose(1, 2), weight.unsqueeze(1).to(x.dtype), groups=C).transpose(1, 2)
        final = ext[:, ext.shape[1] - (width - 1):].transpose(1, 2).contiguous() if output_final_state else None
        return y, final

    if B != 1:
        raise ValueError(f"short_conv: with cu_seqlens the batch dimension must be 1, got {B}")
    doc, rel = doc_index(cu_seqlens, T)
    xs = x[0]
    y = torch.zeros_like(xs)
    for s in range(width):  # tap that reads the input s tokens back
        src = F.pad(xs, (0, 0, s, 0))[:T] if s else xs
        inside = (rel >= s).unsqueeze(1)
        if initial_state is not None and s:
            idx = (width - 1 - s + rel).clamp(min=0, max=width - 2)
            carried = initial_state[doc, :, idx].to(x.dtype)  # [T, C]
            src = torch.where(inside, src, carried)
        else:
            src = src * inside
        y = y + src * weight[:, width - 1 - s].to(x.dtype)
    final = None
    if output_final_state:
        final = _packed_final_state(xs, cu_seqlens, initial_state, width)
    return y.unsqueeze(0), final


def _packed_final_state(xs, cu_seqlens, initial_state, width):
    cu = cu_seqlens.to(torch.long)
    n = cu.numel() - 1
    C = xs.shape[1]
    if width == 1:
        return xs.new_zeros(n, C, 0)
    starts, ends = cu[:-1], cu[1:]
    cols = []
    for j in range(width - 1, 0, -1):  # state slot width-1-j holds the input j tokens before the end
        src_t = ends - j
        inside = (src_t >= starts).unsqueeze(1)
        val = xs[src_t.clamp(min=0)]
        if initial_state is not None:
            idx = (width - 1 - j + (ends - starts)).clamp(max=width - 2)
            carried = initial_state[torch.arange(n, device=xs.device), :, idx].to(xs.dtype)
        else:
            carried = torch.zeros_like(val)
        cols.append(torch.where(inside, val, carried))
    return torch.stack(cols, dim=2)
