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
    # contiguous: inductor cannot lower searchsorted over a sliced view (torch.compile on CUDA)
    doc = torch.searchsorted(cu[1:].contiguous(), t, right=True)
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
        y_ext = F.conv1d(ext.t().unsqueeze(0), weight.unsqueeze(1).to(x.dtype), groups=C)[0].t()
        y = y_ext.index_select(0, tok_at - p)
    final = None
    if output_final_state:
        if p == 0:
            final = x.new_zeros(n, C, 0)
        else:  # the last width - 1 entries of each sequence's slots + tokens, oldest first
            last0 = cu[1:] + torch.arange(n, device=x.device) * p
            idx = (last0[:, None] + torch.arange(p, device=x.device)).reshape(-1)
            final = ext.index_select(0, idx).view(n, p, C).transpose(1, 2).contiguous()
    return y.unsqueeze(0), final
