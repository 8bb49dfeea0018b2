"""Causal softmax attention through several backends, all computing one function.

Layout ``[B, T, H, D]`` for queries and ``[B, T, G, D]`` for keys/values (GQA: query head ``h`` reads
key/value head ``h // (H // G)``). ``window = W`` lets a query see itself and the ``W - 1`` previous
tokens; ``None`` is full causal attention. ``cu_seqlens`` (batch 1) packs documents: attention is
block-diagonal causal.

Backends (the attention block's ``backend`` setting):

- ``flash_attn``: the ``flash_attn`` package (``flash_attn_func`` / ``flash_attn_varlen_func`` with
  ``window_size``); CUDA, fp16/bf16 only.
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``; on CUDA with fp16/bf16 inputs it is
  run under ``sdpa_kernel`` with cuDNN first in training and FlashAttention first in inference (cuDNN
  builds a graph per new shape). Windows and packed documents become
  a boolean mask (which those two kernels do not take, so torch falls back to its other kernels).
- ``flex``: FlexAttention with a block mask (skips fully masked blocks: the fast path for windows and
  packed documents); compiled on CUDA, eager elsewhere. The packed-document block mask is built from
  the document boundaries, block by block (no T x T mask, so 64k-token packed batches fit).
- ``varlen``: ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention kernels inside torch, packed
  sequences, ``window_size``), when this torch has it; CUDA, fp16/bf16.
- ``math``: the plain definition in fp32; the reference for the others and the CPU default.
- ``auto``: CPU -> math (packed documents one by one through SDPA, so the cost is the sum of the
  squared document lengths, not the packed length squared); CUDA -> flash_attn if importable (half
  precision), else sdpa for full causal attention; for windows and packed documents varlen (half
  precision, when torch has it), else flex. FlexAttention compiles a kernel per shape and grad mode:
  in the H200 sweep of 2026-11-29 its compilations and recompilations cost about a minute per
  variant with attention, which varlen does not pay.

``masked_attention`` takes an explicit ``[B, Tq, L]`` boolean mask (decoding from a cache, padded
batches): math, or SDPA with the mask.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from contextlib import nullcontext

import torch
import torch.nn.functional as F

BACKENDS = ("auto", "flash_attn", "sdpa", "flex", "varlen", "math")
HALF = (torch.float16, torch.bfloat16)


class AttentionBackendError(RuntimeError):
    """A requested attention backend cannot run these inputs here."""


@functools.lru_cache(maxsize=1)
def _flash_attn():
    try:
        return importlib.import_module("flash_attn")
    except Exception:  # ImportError, or a broken CUDA extension
        return None


def flash_attn_available() -> bool:
    return _flash_attn() is not None and hasattr(_flash_attn(), "flash_attn_func")


@functools.lru_cache(maxsize=1)
def _varlen_attn():
    try:
        fn = importlib.import_module("torch.nn.attention.varlen").varlen_attn
    except (ImportError, AttributeError):
        return None
    params = inspect.signature(fn).parameters
    if "window_size" not in params:
        return None
    return fn, "enable_gqa" in params


@functools.lru_cache(maxsize=1)
def _flex():
    try:
        mod = importlib.import_module("torch.nn.attention.flex_attention")
        return mod.flex_attention, mod.create_block_mask
    except (ImportError, AttributeError):
        return None


FLEX_MIN_HEAD_DIM_CUDA = 16  # torch's compiled FlexAttention kernel refuses smaller head dims


def available_backends(device: torch.device | str, dtype: torch.dtype, head_dim: int | None = None) -> list[str]:
    """Backends that can run attention on this device and dtype (besides ``auto``)."""
    dev = torch.device(device)
    out = ["math", "sdpa"]
    flex_ok = dev.type != "cuda" or head_dim is None or head_dim >= FLEX_MIN_HEAD_DIM_CUDA
    if _flex() is not None and flex_ok:
        out.append("flex")
    if dev.type == "cuda" and dtype in HALF:
        if _varlen_attn() is not None:
            out.append("varlen")
        if flash_attn_available():
            out.append("flash_attn")
    return out


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype, *, window: int | None,
                    packed: bool, head_dim: int | None = None) -> str:
    """The concrete backend for ``backend`` (``auto`` or a name); raises if it cannot run here."""
    if backend not in BACKENDS:
        raise AttentionBackendError(f"unknown attention backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    avail = available_backends(device, dtype, head_dim)
    if backend == "auto":
        if device.type != "cuda":
            return "math"
        if "flash_attn" in avail:
            return "flash_attn"
        if window is None and not packed:
            return "sdpa"
        if "varlen" in avail:  # FlashAttention kernels with cu_seqlens and windows, nothing to compile
            return "varlen"
        return "flex" if "flex" in avail else "sdpa"
    if backend not in avail:
        why = {"flash_attn": "needs the flash_attn package, a CUDA device and fp16/bf16 inputs",
               "varlen": "needs torch.nn.attention.varlen.varlen_attn with window_size, CUDA and fp16/bf16",
               "flex": f"needs torch.nn.attention.flex_attention, and head_dim >= {FLEX_MIN_HEAD_DIM_CUDA} "
                       "on CUDA"}.get(backend, "")
        raise AttentionBackendError(
            f"attention backend {backend!r} is not available for {dtype} on {device.type} ({why}); "
            f"available: {', '.join(avail)}"
        )
    return backend


# ---------------------------------------------------------------------------------------------- masks
def causal_mask(T: int, device, *, window: int | None = None, cu_seqlens: torch.Tensor | None = None):
    """Boolean ``[T, T]``: True where query i may attend key j."""
    i = torch.arange(T, device=device)
    allowed = i[:, None] >= i[None, :]
    if window is not None:
        allowed &= (i[:, None] - i[None, :]) < window
    if cu_seqlens is not None:
        doc = torch.searchsorted(cu_seqlens.to(device=device, dtype=torch.long)[1:].contiguous(), i, right=True)
        allowed &= doc[:, None] == doc[None, :]
    return allowed


# ------------------------------------------------------------------------------------------ backends
def _math(q, k, v, allowed, scale):
    """q [B,T,H,D], k/v [B,L,G,D], allowed broadcastable to [B,T,L]. fp32 softmax; rows with no key -> 0."""
    H, G = q.shape[2], k.shape[2]
    with torch.autocast(q.device.type, enabled=False):
        qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))  # [B, *, T, D]
        if G != H:
            kf, vf = kf.repeat_interleave(H // G, dim=1), vf.repeat_interleave(H // G, dim=1)
        s = (qf @ kf.transpose(-1, -2)) * scale
        allowed = allowed.unsqueeze(1) if allowed.dim() == 3 else allowed
        s = s.masked_fill(~allowed, float("-inf"))
        any_key = allowed.any(-1, keepdim=True)
        s = torch.where(any_key, s, torch.zeros_like(s))
        p = torch.softmax(s, dim=-1) * any_key
        o = p @ vf
    return o.transpose(1, 2).to(q.dtype)


def _sdpa_context(device: torch.device, dtype: torch.dtype):
    """Kernel priority for SDPA on CUDA in half precision. cuDNN first while gradients are on (training:
    the same shapes every step, and cuDNN's forward was the fastest measured); FlashAttention first
    otherwise, because cuDNN builds a new execution graph for every new shape, and inference shapes
    change with every decoded token and every prompt length."""
    if device.type != "cuda" or dtype not in HALF:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    if torch.is_grad_enabled():
        order.insert(0, SDPBackend.CUDNN_ATTENTION)
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # torch without set_priority
        return sdpa_kernel(order)


def _sdpa(q, k, v, scale, *, allowed=None, is_causal=False):
    H, G = q.shape[2], k.shape[2]
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    mask = None
    if allowed is not None:
        mask = allowed.unsqueeze(1) if allowed.dim() == 3 else allowed
    with _sdpa_context(q.device, q.dtype):
        o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, is_causal=is_causal, scale=scale,
                                           enable_gqa=G != H)
    return o.transpose(1, 2)


_compiled_flex = None


def _flex_fn(device):
    global _compiled_flex
    flex_attention, _ = _flex()
    if device.type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


@functools.lru_cache(maxsize=32)
def _flex_block_mask(T: int, window: int | None, device_str: str):
    _, create_block_mask = _flex()

    def mask_mod(b, h, qi, ki):
        ok = qi >= ki
        if window is not None:
            ok = ok & (qi - ki < window)
        return ok

    return create_block_mask(mask_mod, None, None, T, T, device=device_str)


FLEX_BLOCK = 128  # FlexAttention's default block size (queries and keys)


def _doc_blocks(cu: tuple, window: int | None, device_str: str, block: int = FLEX_BLOCK):
    """Which (query block, key block) pairs of packed documents hold some allowed pair ("any") and which
    hold only allowed pairs ("full"), from the document boundaries alone: O((T / block)^2), where
    ``create_block_mask`` evaluates the mask on every one of the T^2 pairs (32 GiB at 64k tokens).
    "any" may include a block with no allowed pair (the mask is then applied inside it); "full" is exact."""
    T = cu[-1]
    dev = torch.device(device_str)
    doc = torch.searchsorted(torch.tensor(cu[1:], device=dev), torch.arange(T, device=dev), right=True)
    nb = (T + block - 1) // block
    first = torch.arange(nb, device=dev) * block
    last = torch.clamp(first + block - 1, max=T - 1)
    d_first, d_last = doc[first], doc[last]
    qb, kb = torch.arange(nb, device=dev)[:, None], torch.arange(nb, device=dev)[None, :]
    # documents are contiguous and in order, so for kb <= qb some pair shares a document iff the key
    # block's last document reaches the query block's first one
    anyb = (kb <= qb) & (d_last[None, :] >= d_first[:, None])
    fullb = (kb < qb) & (d_last[:, None] == d_first[None, :]) & (last[None, :] - first[None, :] == block - 1)
    if window is not None:
        anyb &= (first[:, None] - last[None, :]) < window  # the closest pair is within the window
        fullb &= (last[:, None] - first[None, :]) < window  # the farthest pair is within the window
    return doc, anyb, fullb


def _to_kv_blocks(sel: torch.Tensor):
    """[nq, nk] bool -> (counts [1, 1, nq], indices [1, 1, nq, nk]) with the selected blocks first."""
    counts = sel.sum(-1, dtype=torch.int32)
    order = torch.argsort((~sel).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return counts[None, None], order[None, None]


@functools.lru_cache(maxsize=8)
def _flex_doc_block_mask(cu: tuple, window: int | None, device_str: str):
    """Block mask for packed documents, built from the block structure (no T x T mask); cached so that
    the attention layers of one step share it."""
    from torch.nn.attention.flex_attention import BlockMask

    T = cu[-1]
    doc, anyb, fullb = _doc_blocks(cu, window, device_str)

    def mask_mod(b, h, qi, ki):
        ok = (qi >= ki) & (doc[qi] == doc[ki])
        if window is not None:
            ok = ok & (qi - ki < window)
        return ok

    partial_n, partial_i = _to_kv_blocks(anyb & ~fullb)
    full_n, full_i = _to_kv_blocks(fullb)
    return BlockMask.from_kv_blocks(partial_n, partial_i, full_n, full_i, BLOCK_SIZE=FLEX_BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(T, T))


_flex_refused: set = set()  # shapes whose FlexAttention kernel the compiler could not build


def _compile_error(e: BaseException) -> bool:
    """An error raised by torch.compile's machinery (inductor found no valid kernel, a lowering failed),
    not by the attention itself."""
    return any(c.__module__.startswith(("torch._inductor", "torch._dynamo")) for c in type(e).__mro__)


def _flex_attention(q, k, v, scale, *, window, cu_seqlens):
    B, T, H, D = q.shape
    G = k.shape[2]
    key = (T, H, G, D, q.dtype, window, cu_seqlens is not None, str(q.device))
    if key in _flex_refused:
        return _sdpa_instead_of_flex(q, k, v, scale, window=window, cu_seqlens=cu_seqlens)
    if cu_seqlens is None:
        bm = _flex_block_mask(T, window, str(q.device))
    else:
        bm = _flex_doc_block_mask(tuple(cu_seqlens.tolist()), window, str(q.device))
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    try:
        o = _flex_fn(q.device)(qt, kt, vt, block_mask=bm, scale=scale, enable_gqa=G != H)
    except Exception as e:
        # seen on an H200 with torch 2.11: "NoValidChoicesError" for small shapes (T = 70, head_dim 32)
        if not _compile_error(e):
            raise
        warnings.warn(f"FlexAttention could not be compiled for {T} tokens, {H}/{G} heads of {D}, {q.dtype} "
                      f"({type(e).__name__}); this shape runs through SDPA instead", stacklevel=2)
        _flex_refused.add(key)
        return _sdpa_instead_of_flex(q, k, v, scale, window=window, cu_seqlens=cu_seqlens)
    return o.transpose(1, 2)


def _sdpa_instead_of_flex(q, k, v, scale, *, window, cu_seqlens):
    if cu_seqlens is not None:
        return _per_document(q, k, v, scale, window=window, cu_seqlens=cu_seqlens)
    if window is None:
        return _sdpa(q, k, v, scale, is_causal=True)
    return _sdpa(q, k, v, scale, allowed=causal_mask(q.shape[1], q.device, window=window))


def _per_document(q, k, v, scale, *, window, cu_seqlens):
    """Packed documents one at a time through SDPA (CPU ``auto``): the cost is the sum of the squared
    document lengths, where one masked T x T product over the packed row costs T^2."""
    out = torch.empty_like(q)
    cu = cu_seqlens.tolist()
    for s, e in zip(cu[:-1], cu[1:]):
        if e == s:
            continue
        qs, ks, vs = q[:, s:e], k[:, s:e], v[:, s:e]
        if window is None:
            out[:, s:e] = _sdpa(qs, ks, vs, scale, is_causal=True)
        else:
            out[:, s:e] = _sdpa(qs, ks, vs, scale, allowed=causal_mask(e - s, q.device, window=window))
    return out


def _flash(q, k, v, scale, *, window, cu_seqlens):
    fa = _flash_attn()
    ws = (window - 1, 0) if window is not None else (-1, -1)
    if cu_seqlens is None:
        return fa.flash_attn_func(q, k, v, softmax_scale=scale, causal=True, window_size=ws)
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    maxlen = int((cu[1:] - cu[:-1]).max().item())
    o = fa.flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, maxlen, maxlen, softmax_scale=scale, causal=True,
                                  window_size=ws)
    return o.unsqueeze(0)


def _torch_varlen(q, k, v, scale, *, window, cu_seqlens):
    fn, has_gqa = _varlen_attn()
    B, T, H, D = q.shape
    G = k.shape[2]
    if cu_seqlens is None:
        cu = torch.arange(0, (B + 1) * T, T, device=q.device, dtype=torch.int32)
        maxlen = T
    else:
        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        maxlen = int((cu[1:] - cu[:-1]).max().item())
    qp, kp, vp = q.reshape(B * T, H, D), k.reshape(B * T, G, D), v.reshape(B * T, G, D)
    kw = {}
    if G != H:
        if has_gqa:
            kw["enable_gqa"] = True
        else:
            kp, vp = kp.repeat_interleave(H // G, dim=1), vp.repeat_interleave(H // G, dim=1)
    ws = (window - 1, 0) if window is not None else (-1, 0)
    o = fn(qp, kp, vp, cu, cu, maxlen, maxlen, scale=scale, window_size=ws, **kw)
    return o.reshape(B, T, H, D)


# ------------------------------------------------------------------------------------------- public
def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int | None = None,
                     cu_seqlens: torch.Tensor | None = None, scale: float | None = None,
                     backend: str = "auto") -> torch.Tensor:
    """Causal (optionally sliding-window, optionally packed) attention. Returns ``[B, T, H, D]``."""
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2]:
        raise ValueError(f"causal_attention: expected q [B,T,H,D] and k, v [B,T,G,D]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of key/value heads ({k.shape[2]})")
    if cu_seqlens is not None and q.shape[0] != 1:
        raise ValueError(f"with cu_seqlens the batch dimension must be 1, got {q.shape[0]}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    which = resolve_backend(backend, q.device, q.dtype, window=window, packed=cu_seqlens is not None,
                            head_dim=q.shape[-1])
    T = q.shape[1]
    if which == "math":
        if cu_seqlens is not None and backend == "auto":
            return _per_document(q, k, v, scale, window=window, cu_seqlens=cu_seqlens)
        return _math(q, k, v, causal_mask(T, q.device, window=window, cu_seqlens=cu_seqlens), scale)
    if which == "sdpa":
        if window is None and cu_seqlens is None:
            return _sdpa(q, k, v, scale, is_causal=True)
        return _sdpa(q, k, v, scale, allowed=causal_mask(T, q.device, window=window, cu_seqlens=cu_seqlens))
    if which == "flex":
        return _flex_attention(q, k, v, scale, window=window, cu_seqlens=cu_seqlens)
    if which == "flash_attn":
        return _flash(q, k, v, scale, window=window, cu_seqlens=cu_seqlens)
    return _torch_varlen(q, k, v, scale, window=window, cu_seqlens=cu_seqlens)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, *,
                     scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """Attention with an explicit boolean mask ``allowed [B, Tq, L]``; a query with no allowed key gets 0."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    which = resolve_backend(backend, q.device, q.dtype, window=None, packed=False)
    if which == "math":
        return _math(q, k, v, allowed, scale)
    any_key = allowed.any(-1, keepdim=True)
    o = _sdpa(q, k, v, scale, allowed=allowed | ~any_key)
    return o * any_key.unsqueeze(-1).to(o.dtype)
