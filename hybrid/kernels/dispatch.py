"""One public entry point for the CARVE operator, dispatching to a backend.

``backend="auto"``: Triton on CUDA tensors when the Triton kernels import, else chunked PyTorch.
``backend="torch"`` / ``"triton"`` / ``"reference"`` force one (the reference is the slow float64 loop).

The Triton sequence kernel is version 2 (``triton_v2``: state in registers, parallel pre/post passes;
it falls back to v1 itself for head dims above 128 and fp16/fp32 products above 128x64). Set
``HYBRID_TRITON_IMPL=v1`` to force version 1 (one program per head and value block). Decoding one token
uses v1's decode kernel.
"""

from __future__ import annotations

import importlib
import os

import torch

from .chunked import carve_chunked
from .inputs import CarveInputError, CarveState, default_scale
from .reference import carve_reference, carve_step

BACKENDS = ("auto", "torch", "triton", "reference")


def _triton_module():
    try:
        return importlib.import_module("hybrid.kernels.triton_carve")
    except ImportError:
        return None


def _triton_seq_fn():
    """The Triton sequence kernel: v2 unless HYBRID_TRITON_IMPL=v1."""
    impl = os.environ.get("HYBRID_TRITON_IMPL", "v2")
    if impl not in ("v1", "v2"):
        raise CarveInputError(f"HYBRID_TRITON_IMPL must be v1 or v2, got {impl!r}")
    if impl == "v2":
        return importlib.import_module("hybrid.kernels.triton_v2").carve_triton_v2
    return _triton_module().carve_triton


def triton_available() -> bool:
    return _triton_module() is not None and torch.cuda.is_available()


def _pick(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise CarveInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and _triton_module() is not None else "torch"
    if backend == "triton" and _triton_module() is None:
        raise CarveInputError("backend='triton' requested but the Triton kernels could not be imported")
    return backend


def carve(q, k, v, g, a, w, u_down=None, u_up=None, *, scale=None, chunk_size=64, content_grad="full",
          initial_state: CarveState | None = None, output_final_state=False, cu_seqlens=None,
          backend="auto"):
    """CARVE over a sequence (see hybrid.kernels.inputs for shapes). Returns (o, final_state | None)."""
    kw = dict(scale=scale, chunk_size=chunk_size, content_grad=content_grad, initial_state=initial_state,
              output_final_state=output_final_state, cu_seqlens=cu_seqlens)
    which = _pick(backend, q.device)
    if which == "triton":
        return _triton_seq_fn()(q, k, v, g, a, w, u_down, u_up, **kw)
    if which == "reference":
        o, st = carve_reference(q, k, v, g, a, w, u_down, u_up, **kw)
        return o.to(q.dtype), st
    return carve_chunked(q, k, v, g, a, w, u_down, u_up, **kw)


def carve_decode(q_t, k_t, v_t, g_t, a_t, w_t, u_down, u_up, state: CarveState, *, scale=None,
                 chunk_size=64, content_grad="full", backend="auto"):
    """One new token per sequence from a carried state. Inputs [N, H, K]/[N, H, V]; w_t [N, H] or [N, H, V].

    Returns (o_t [N, H, V] in the input dtype, new state). The state is fp32."""
    sc = default_scale(q_t.shape[-1], scale)
    which = _pick(backend, q_t.device)
    if which == "triton" and hasattr(_triton_module(), "carve_decode_triton"):
        return _triton_module().carve_decode_triton(q_t, k_t, v_t, g_t, a_t, w_t, u_down, u_up, state,
                                                    scale=sc, chunk_size=chunk_size)
    o, st = carve_step(q_t, k_t, v_t, g_t, a_t, w_t, u_down, u_up, state, scale=sc, chunk_size=chunk_size,
                       content_grad=content_grad)
    return o.to(q_t.dtype), st
