"""Softmax attention layer: GQA, RoPE, causal full or sliding-window attention, KV cache.

Without a cache to read, the layer calls ``causal_attention`` (the fast backends; packed documents
via ``cu_seqlens``; a padded batch is packed row by row, so pads cost nothing and need no T x T mask).
With a non-empty cache it builds an explicit mask from the cached per-token RoPE positions and
validity: key j is visible to query i iff j is a real token, ``pos_j <= pos_i`` and (sliding window)
``pos_i - pos_j < window``. With a ``StaticHybridCache`` (one new token per row) the static cache layer
applies RoPE, writes the token into its preallocated buffer and attends over it (``static_cache``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import init
from .attention_backends import causal_attention, masked_attention, resolve_backend
from .cache import AttentionCacheLayer
from .static_cache import StaticAttentionLayer


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float):
    """cos, sin ``[B, T, head_dim]`` (fp32) for integer positions ``[B, T]`` (rotate-half convention)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
                                / head_dim))
    ang = positions.to(torch.float32).unsqueeze(-1) * inv_freq
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x ``[B, T, H, D]``; cos/sin ``[B, T, D]``."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rot = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos.unsqueeze(2) + rot * sin.unsqueeze(2)).to(x.dtype)


class AttentionMixer(nn.Module):
    def __init__(self, block: dict, d_model: int):
        super().__init__()
        self.H, self.G, self.D = block["heads"], block["kv_heads"], block["head_dim"]
        self.window = block["window"]
        self.theta = block["rope_theta"]
        self.backend = block["backend"]
        self.q_proj = nn.Linear(d_model, self.H * self.D, bias=False)
        self.k_proj = nn.Linear(d_model, self.G * self.D, bias=False)
        self.v_proj = nn.Linear(d_model, self.G * self.D, bias=False)
        self.o_proj = nn.Linear(self.H * self.D, d_model, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, n_layers: int = 1, std: float = 0.02):
        for lin in (self.q_proj, self.k_proj, self.v_proj):
            init.normal_(lin.weight, mean=0.0, std=std)
        init.normal_(self.o_proj.weight, mean=0.0, std=std / math.sqrt(2 * n_layers))

    def forward(self, x: torch.Tensor, *, positions: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, cache_layer: AttentionCacheLayer | None = None,
                **_unused) -> torch.Tensor:
        """x ``[B, T, d]``; positions ``[B, T]`` (RoPE, restart per document); valid ``[B, T]`` or None."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D)
        k = self.k_proj(x).view(B, T, self.G, self.D)
        v = self.v_proj(x).view(B, T, self.G, self.D)
        if isinstance(cache_layer, StaticAttentionLayer):  # one token per row over the preallocated buffer
            o = cache_layer.step(q, k, v, positions[:, 0], self.theta)
            return self.o_proj(o.reshape(B, T, self.H * self.D))
        cos, sin = rope_angles(positions, self.D, self.theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        has_past = cache_layer is not None and cache_layer.keys is not None
        if not has_past:
            if valid is None:
                o = causal_attention(q, k, v, window=self.window, cu_seqlens=cu_seqlens, backend=self.backend)
            else:
                if cu_seqlens is not None:
                    raise ValueError("cu_seqlens cannot be combined with a padded batch")
                o = self._packed(q, k, v, valid)
            if cache_layer is not None:
                ones = torch.ones(B, T, dtype=torch.bool, device=x.device)
                cache_layer.update(k.transpose(1, 2), v.transpose(1, 2), positions, ones if valid is None else valid)
        else:
            if cu_seqlens is not None:
                raise ValueError("cu_seqlens cannot be combined with a non-empty cache")
            valid_q = valid if valid is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)
            kk, vv, pos_k, valid_k = cache_layer.update(k.transpose(1, 2), v.transpose(1, 2), positions, valid_q)
            kk, vv = kk.transpose(1, 2), vv.transpose(1, 2)
            dpos = positions.unsqueeze(2) - pos_k.unsqueeze(1)  # [B, T, L]
            allowed = valid_k.unsqueeze(1) & (dpos >= 0) & valid_q.unsqueeze(2)
            if self.window is not None:
                allowed &= dpos < self.window
            o = masked_attention(q, kk, vv, allowed, backend=self.backend)
        return self.o_proj(o.reshape(B, T, self.H * self.D))

    def _packed(self, q, k, v, valid):
        """Padded batch without a past: pack each row's real tokens as one document (exact, no T x T mask).

        When the backend would be FlexAttention (auto on CUDA without flash_attn) or SDPA, each row's real
        tokens go through SDPA on their own instead: generation batches have a new packed length every
        time, and a packed block mask would be recompiled (flex) or dense (SDPA) for each."""
        B, T = valid.shape
        which = resolve_backend(self.backend, q.device, q.dtype, window=self.window, packed=True, head_dim=self.D)
        if which == "sdpa" or (which == "flex" and self.backend == "auto"):
            out = q.new_zeros(B, T, self.H, self.D)
            for b in range(B):
                idx = torch.nonzero(valid[b]).squeeze(1)
                if idx.numel():
                    out[b, idx] = causal_attention(q[b, idx][None], k[b, idx][None], v[b, idx][None],
                                                   window=self.window, backend="sdpa")[0]
            return out
        flat = torch.nonzero(valid.reshape(-1)).squeeze(1)
        cu = F.pad(torch.cumsum(valid.sum(1), 0), (1, 0))
        pick = lambda t: t.reshape(B * T, *t.shape[2:])[flat].unsqueeze(0)
        op = causal_attention(pick(q), pick(k), pick(v), window=self.window, cu_seqlens=cu, backend=self.backend)
        return q.new_zeros(B * T, self.H, self.D).index_copy(0, flat, op[0]).view(B, T, self.H, self.D)
