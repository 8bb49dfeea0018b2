"""One decode step of a recurrent (CARVE / GDN-2) layer over a ``StaticRecurrentLayer``, in place.

``fused_step``: every projection of the input in one matrix product (q, k, v, the first factors of the
decay and output gates, the erase and write gates), the second factors, then one Triton kernel for
everything up to ``o_proj`` (``hybrid.ops.carve_decode_step``); what CUDA runs. The stacked input
weight is made once and remade when a weight moves or changes (its address or version counter). ``torch_step``: the layer's own one-token path, its
new states copied into the static buffers; what the CPU runs. Neither syncs with the host, so either
can be captured in a CUDA graph."""

from __future__ import annotations

import functools
import importlib

import torch
import torch.nn.functional as F

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


def _in_parts(mixer) -> list[torch.Tensor]:
    return [mixer.q_proj.weight, mixer.k_proj.weight, mixer.v_proj.weight, mixer.f_proj[0].weight,
            mixer.b_proj.weight, mixer.w_proj.weight, mixer.g_proj[0].weight]


def weights_key(params) -> tuple:
    """Address and version counter of each tensor: changes when one is moved, recast or updated in place."""
    return tuple((p.data_ptr(), p._version) for p in params)


def stacked_in_weight(mixer) -> torch.Tensor:
    """The mixer's input projections stacked into one ``[2HK + HV + R + HK + W + R, d]`` weight."""
    parts = _in_parts(mixer)
    key = weights_key(parts)
    held = mixer.__dict__.get("_decode_in_weight")  # not a module attribute: never saved, never moved
    if held is None or held[0] != key:
        with torch.no_grad():
            held = (key, torch.cat(parts))
        mixer.__dict__["_decode_in_weight"] = held
    return held[1]


def fused_step(mixer, x: torch.Tensor, layer: StaticRecurrentLayer) -> torch.Tensor:
    op = _fused_op()
    if op is None:
        raise RuntimeError("the fused CARVE decode step needs Triton")
    H, K, V = mixer.H, mixer.K, mixer.V
    sizes = [p.shape[0] for p in _in_parts(mixer)]  # q, k, v, f rank, b, w, g rank
    z = F.linear(x[:, 0], stacked_in_weight(mixer))
    qkv, f0, a, w, g0 = torch.split(z, [2 * H * K + H * V, sizes[3], sizes[4], sizes[5], sizes[6]], dim=-1)
    y = op(qkv, layer.conv_state, mixer.conv_weight, mixer.f_proj[1](f0), mixer.dt_bias, mixer.A_log, a, w,
           mixer.g_proj[1](g0), mixer.u_down if mixer.content else None, mixer.u_up if mixer.content else None,
           mixer.o_norm.weight, layer.S, layer.m_prev, layer.o_sum, layer.pos, layer.lengths,
           chunk_size=mixer.chunk_size, eps=mixer.o_norm.eps)
    return mixer.o_proj(y).unsqueeze(1)


def recurrent_step(mixer, x: torch.Tensor, layer: StaticRecurrentLayer) -> torch.Tensor:
    """``x [B, 1, d]`` (B = the cache's capacity) -> ``y [B, 1, d]``; updates ``layer`` in place."""
    if x.is_cuda and _fused_op() is not None and getattr(mixer, "ops_backend", "auto") != "torch":
        return fused_step(mixer, x, layer)
    return torch_step(mixer, x, layer)
