"""The CARVE operator: one public entry (``carve``, ``carve_decode``) over its implementations.

- reference.py: the float64 definition, token by token (``carve_reference``, ``carve_step``).
- chunked.py: the chunked PyTorch implementation (``carve_chunked``), any device and dtype.
- chunk.py: the Triton chunk kernels (chunk_fwd, chunk_bwd, chunk_grads, sharing tiles.py) for heads
  up to 128; wide.py (wide_kernels.py) for larger heads; decode.py for one token from a carried state.
- settings.py: how a Triton call runs, chosen from shape, dtype and device (``CarveSettings``).
- inputs.py: the carried state and the input checks; layout.py: host-side buffer and grid helpers.

``backend="auto"`` runs Triton on CUDA tensors when Triton imports, else chunked PyTorch;
``"torch"``, ``"triton"`` and ``"reference"`` force one.
"""

from __future__ import annotations

import functools

import torch

from .chunked import carve_chunked
from .inputs import CarveInputError, CarveState, default_scale
from .reference import carve_reference, carve_step

BACKENDS = ("auto", "torch", "triton", "reference")

__all__ = [
    "CarveInputError",
    "CarveState",
    "carve",
    "carve_chunked",
    "carve_decode",
    "carve_reference",
    "carve_step",
    "triton_available",
]


@functools.cache
def _triton():
    """(carve_triton, carve_decode_triton), or None without Triton. Imported on first use: importing
    Triton and compiling the kernel decorators takes seconds that a CLI start on the CPU need not pay."""
    try:
        from .chunk import carve_triton
        from .decode import carve_decode_triton
    except ImportError:
        return None
    return carve_triton, carve_decode_triton


def triton_available() -> bool:
    return torch.cuda.is_available() and _triton() is not None


def _pick(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise CarveInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and _triton() is not None else "torch"
    if backend == "triton" and _triton() is None:
        raise CarveInputError("backend='triton' requested but the Triton kernels could not be imported")
    return backend


def carve(q, k, v, g, a, w, u_down=None, u_up=None, *, scale=None, chunk_size=64, content_grad="full",
          initial_state: CarveState | None = None, output_final_state=False, cu_seqlens=None,
          backend="auto"):
    """CARVE over a sequence (shapes in hybrid/ops/carve/inputs.py). Returns (o, final_state | None)."""
    kw = dict(scale=scale, chunk_size=chunk_size, content_grad=content_grad, initial_state=initial_state,
              output_final_state=output_final_state, cu_seqlens=cu_seqlens)
    which = _pick(backend, q.device)
    if which == "triton":
        return _triton()[0](q, k, v, g, a, w, u_down, u_up, **kw)
    if which == "reference":
        o, st = carve_reference(q, k, v, g, a, w, u_down, u_up, **kw)
        return o.to(q.dtype), st
    return carve_chunked(q, k, v, g, a, w, u_down, u_up, **kw)


def carve_decode(q_t, k_t, v_t, g_t, a_t, w_t, u_down, u_up, state: CarveState, *, scale=None,
                 chunk_size=64, content_grad="full", backend="auto"):
    """One new token per sequence from a carried state. Inputs [N, H, K]/[N, H, V]; w_t [N, H] or [N, H, V].

    Returns (o_t [N, H, V] in the input dtype, new state). The state is fp32."""
    sc = default_scale(q_t.shape[-1], scale)
    if _pick(backend, q_t.device) == "triton":
        return _triton()[1](q_t, k_t, v_t, g_t, a_t, w_t, u_down, u_up, state, scale=sc, chunk_size=chunk_size)
    o, st = carve_step(q_t, k_t, v_t, g_t, a_t, w_t, u_down, u_up, state, scale=sc, chunk_size=chunk_size,
                       content_grad=content_grad)
    return o.to(q_t.dtype), st
