"""One decode step of a recurrent (CARVE / GDN-2) layer over a ``StaticRecurrentLayer``, in place.

``fused_step``: the projections, then one Triton kernel for everything up to ``o_proj``
(``hybrid.ops.carve_decode_step``); what CUDA runs. ``torch_step``: the layer's own one-token path, its
new states copied into the static buffers; what the CPU runs. Neither syncs with the host, so either
can be captured in a CUDA graph."""

from __future__ import annotations

import functools
import importlib

import torch

from .static_cache import StaticRecurrentLayer


@functools.lru_cache(maxsize=1)
def _fused_op():
    try:
        return importlib.import_module("hybrid.ops.carve_decode_step").carve_decode_step
    except ImportError:  # no Triton
        return None


def torch_step(mixer, x: torch.Tensor, layer: StaticRecurrentLayer) -> torch.Tensor:
    y, conv1, st1 = mixer._core(x, conv_state=layer.conv_state, state=layer.state, want_state=True, decode=True)
    layer.conv_state.copy_(conv1)
    for mine, new in ((layer.S, st1.S), (layer.m_prev, st1.m_prev), (layer.o_sum, st1.o_sum), (layer.pos, st1.pos)):
        mine.copy_(new)
    return y


def fused_step(mixer, x: torch.Tensor, layer: StaticRecurrentLayer) -> torch.Tensor:
    op = _fused_op()
    if op is None:
        raise RuntimeError("the fused CARVE decode step needs Triton")
    x2 = x[:, 0]
    qkv = torch.cat([mixer.q_proj(x2), mixer.k_proj(x2), mixer.v_proj(x2)], dim=-1)
    y = op(qkv, layer.conv_state, mixer.conv_weight, mixer.f_proj(x2), mixer.dt_bias, mixer.A_log, mixer.b_proj(x2),
           mixer.w_proj(x2), mixer.g_proj(x2), mixer.u_down if mixer.content else None,
           mixer.u_up if mixer.content else None, mixer.o_norm.weight, layer.S, layer.m_prev, layer.o_sum, layer.pos,
           layer.lengths, chunk_size=mixer.chunk_size, eps=mixer.o_norm.eps)
    return mixer.o_proj(y).unsqueeze(1)


def recurrent_step(mixer, x: torch.Tensor, layer: StaticRecurrentLayer) -> torch.Tensor:
    """``x [B, 1, d]`` (B = the cache's capacity) -> ``y [B, 1, d]``; updates ``layer`` in place."""
    if x.is_cuda and _fused_op() is not None:
        return fused_step(mixer, x, layer)
    return torch_step(mixer, x, layer)
