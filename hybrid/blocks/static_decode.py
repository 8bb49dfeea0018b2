"""Decoding through a ``StaticHybridCache``: the prefill that fills it, and the one-token step.

``static_step`` is the whole model for one token per row over the static buffers: fixed shapes, state
updated in place, no value read back to the host, no Python branch on a device value. It runs eagerly
(CPU, or CUDA before a capture) or is captured once and replayed (``decode_graph``).
"""

from __future__ import annotations

import functools
import importlib

import torch

from .cache import HybridCache
from .static_cache import StaticHybridCache


def _cache_of(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


@functools.lru_cache(maxsize=1)
def _fused_add_norm():
    try:
        return importlib.import_module("hybrid.ops.add_rmsnorm").add_rmsnorm
    except ImportError:  # no Triton
        return None


def add_norm(h: torch.Tensor, delta: torch.Tensor | None, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """``h + delta`` and its RMSNorm (one Triton kernel on CUDA; the modules' own ops elsewhere)."""
    op = _fused_add_norm() if h.is_cuda else None
    if op is not None and (delta is None or delta.dtype == h.dtype):
        return op(h, delta, norm.weight, norm.eps)
    if delta is not None:
        h = h + delta
    return h, norm(h)


def static_step(model, ids: torch.Tensor, cache: StaticHybridCache) -> torch.Tensor:
    """Logits ``[capacity, 1, vocab]`` of the tokens ``ids [capacity, 1]``; advances every row by one.

    The blocks of ``HybridBlock.forward`` (h += mixer(norm(h)); h += mlp(norm(h))), with each residual
    add fused into the norm that follows it."""
    base = model.model
    h, delta = base.embed_tokens(ids), None
    positions = cache.lengths[:, None]
    for layer, cache_layer in zip(base.layers, cache.layers):
        h, x = add_norm(h, delta, layer.mixer_norm)
        delta = layer.mixer(x, positions=positions, cu_seqlens=None, valid=None, cache_layer=cache_layer)
        if layer.mlp is not None:
            h, x = add_norm(h, delta, layer.mlp_norm)
            delta = layer.mlp(x)
    cache.lengths.add_(1)
    return model.lm_head(add_norm(h, delta, base.norm)[1])


def static_prefill(model, input_ids, attention_mask, cache: StaticHybridCache, *, logits_to_keep=0):
    """The prefill of an empty ``cache``: the prompt runs through a dynamic ``HybridCache``, whose state
    is then copied in. Returns the logits and that dynamic cache, which a caller may go on feeding (it
    shares no memory with ``cache``)."""
    B, T = input_ids.shape
    if cache.seen_tokens != 0:
        raise ValueError("static_prefill: the StaticHybridCache has already seen a prefill")
    if B > cache.capacity:
        raise ValueError(f"the prompt batch has {B} rows, the StaticHybridCache holds {cache.capacity}")
    if T > cache.max_len:
        raise ValueError(f"the prompt has {T} tokens, the StaticHybridCache holds {cache.max_len}")
    out = model(input_ids=input_ids, attention_mask=attention_mask, cache=HybridCache(model.config),
                use_cache=True, logits_to_keep=logits_to_keep)
    dyn = _cache_of(out)
    cache.load(dyn)
    return out.logits, dyn


def static_forward(model, input_ids, attention_mask, cache: StaticHybridCache, *, logits_to_keep=0):
    """Logits of ``input_ids`` through ``cache``: the first call is the prefill (``static_prefill``),
    every later one takes exactly one new real token per row."""
    if input_ids is None:
        raise ValueError("a StaticHybridCache decodes token ids: give input_ids, not inputs_embeds")
    B, T = input_ids.shape
    if cache.seen_tokens == 0:
        return static_prefill(model, input_ids, attention_mask, cache, logits_to_keep=logits_to_keep)[0]
    if T != 1:
        raise ValueError(f"after its prefill a StaticHybridCache takes one token per row per call, got {T}")
    if B != cache.rows:
        raise ValueError(f"the StaticHybridCache holds {cache.rows} rows, the input has {B}")
    if cache.seen_tokens >= cache.max_len:
        raise ValueError(f"the StaticHybridCache is full: it holds {cache.max_len} tokens per row")
    if attention_mask is not None and not bool(attention_mask[:, -1].bool().all()):
        raise ValueError("a StaticHybridCache decodes one real token per row: the attention mask's last "
                         "column must be all ones")
    if cache.step_fn is not None:
        logits = cache.step_fn(input_ids)
    else:
        ids = input_ids
        if B < cache.capacity:
            ids = torch.cat([ids, ids.new_zeros(cache.capacity - B, 1)])
        logits = static_step(model, ids, cache)[:B]
    cache.seen_tokens += 1
    return logits
