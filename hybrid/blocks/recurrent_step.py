"""One decode step of a recurrent (CARVE / GDN-2) layer over a ``StaticRecurrentLayer``, in place.

On CUDA with Triton, one fused kernel per layer does everything between the projections and
``o_proj`` (``hybrid.ops.carve_decode_step``); elsewhere the layer's own one-token path runs and its
new states are copied into the static buffers. Both are free of host syncs, so either can be captured
in a CUDA graph."""

from __future__ import annotations

import torch

from .static_cache import StaticRecurrentLayer


def recurrent_step(mixer, x: torch.Tensor, layer: StaticRecurrentLayer) -> torch.Tensor:
    """``x [B, 1, d]`` (B = the cache's capacity) -> ``y [B, 1, d]``; updates ``layer`` in place."""
    y, conv1, st1 = mixer._core(x, conv_state=layer.conv_state, state=layer.state, want_state=True, decode=True)
    layer.conv_state.copy_(conv1)
    for mine, new in ((layer.S, st1.S), (layer.m_prev, st1.m_prev), (layer.o_sum, st1.o_sum), (layer.pos, st1.pos)):
        mine.copy_(new)
    return y
