"""Shared definitions for every CARVE implementation: the carried state and input validation.

Layout (as in most linear-attention libraries): tokens are ``[B, T, H, D]``.

=========  ==================  ==============================================
name       shape               meaning
=========  ==================  ==============================================
q, k       [B, T, H, K]        query / key (the block L2-normalises them)
v          [B, T, H, V]        value
g          [B, T, H, K]        log-decay per key channel, every entry <= 0
a          [B, T, H, K]        erase-gate logits (before the content term)
w          [B, T, H]           scalar write gate in [0, 1] (CARVE), or
           [B, T, H, V]        vector write gate (GDN-2 baseline mode)
u_down     [H, r, V]           content projection, first factor
u_up       [H, K, r]           content projection, second factor (zero-init)
=========  ==================  ==============================================

With ``cu_seqlens`` (int64, ``[N + 1]``) the batch dimension must be 1 and the ``T`` axis holds N
packed sequences; state and chunk counting restart at every sequence start.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

MAX_HEAD_DIM = 256
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CONTENT_GRAD_MODES = ("full", "detach")


class CarveInputError(ValueError):
    """Raised when CARVE operator inputs have the wrong shape, dtype or value."""


@dataclass
class CarveState:
    """State carried between calls, per sequence ``n`` and head ``h``.

    - ``S``      [N, H, K, V] fp32: the recurrent state after the last token.
    - ``m_prev`` [N, H, V]    fp32: mean of ``o`` over the last *complete* chunk (0 before the first).
    - ``o_sum``  [N, H, V]    fp32: running sum of ``o`` over the current, incomplete chunk.
    - ``pos``    [N]          int64: tokens already in the current chunk (0 .. C-1).
    """

    S: torch.Tensor
    m_prev: torch.Tensor
    o_sum: torch.Tensor
    pos: torch.Tensor

    @classmethod
    def zeros(cls, n: int, h: int, k: int, v: int, device=None, dtype=torch.float32) -> CarveState:
        return cls(
            S=torch.zeros(n, h, k, v, device=device, dtype=dtype),
            m_prev=torch.zeros(n, h, v, device=device, dtype=dtype),
            o_sum=torch.zeros(n, h, v, device=device, dtype=dtype),
            pos=torch.zeros(n, device=device, dtype=torch.long),
        )

    def to(self, *args, **kwargs) -> CarveState:
        return CarveState(
            S=self.S.to(*args, **kwargs),
            m_prev=self.m_prev.to(*args, **kwargs),
            o_sum=self.o_sum.to(*args, **kwargs),
            pos=self.pos.to(device=self.S.to(*args, **kwargs).device),
        )

    def detach(self) -> CarveState:
        return CarveState(self.S.detach(), self.m_prev.detach(), self.o_sum.detach(), self.pos.clone())

    def index_select(self, idx: torch.Tensor) -> CarveState:
        """Reorder / select sequences (beam search, batch filtering)."""
        return CarveState(self.S[idx], self.m_prev[idx], self.o_sum[idx], self.pos[idx])


@dataclass(frozen=True)
class CarveShapes:
    B: int
    T: int
    H: int
    K: int
    V: int
    r: int  # 0 when content is off
    vector_w: bool
    n_seq: int


def _fail(msg: str) -> None:
    raise CarveInputError(msg)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_finite_enabled() -> bool:
    """NaN/Inf guard: off by default (it costs a device sync); ``HYBRID_CHECK_FINITE=1`` turns it on."""
    return os.environ.get("HYBRID_CHECK_FINITE", "0") not in ("", "0", "false", "False")


def validate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    a: torch.Tensor,
    w: torch.Tensor,
    u_down: torch.Tensor | None,
    u_up: torch.Tensor | None,
    *,
    chunk_size: int,
    content_grad: str,
    initial_state: CarveState | None,
    cu_seqlens: torch.Tensor | None,
    check_finite: bool | None = None,
) -> CarveShapes:
    """Check every input of the operator and return the named sizes. Raises ``CarveInputError``."""
    tensors = {"q": q, "k": k, "v": v, "g": g, "a": a, "w": w}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            _fail(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            _fail(f"{name} must be a floating tensor (fp16/bf16/fp32/fp64), got {t.dtype}")
    if q.dim() != 4:
        _fail(f"q must be [B, T, H, K], got {_shape(q)}")
    B, T, H, K = q.shape
    if k.shape != q.shape:
        _fail(f"k must have the shape of q {_shape(q)}, got {_shape(k)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        _fail(f"v must be [B, T, H, V] = [{B}, {T}, {H}, V], got {_shape(v)}")
    V = v.shape[3]
    for name in ("g", "a"):
        if tensors[name].shape != q.shape:
            _fail(f"{name} must be [B, T, H, K] = {_shape(q)}, got {_shape(tensors[name])}")
    if w.shape == (B, T, H):
        vector_w = False
    elif w.shape == (B, T, H, V):
        vector_w = True
    else:
        _fail(
            f"w must be [B, T, H] = [{B}, {T}, {H}] (scalar write gate) or [B, T, H, V] = "
            f"[{B}, {T}, {H}, {V}] (vector write gate), got {_shape(w)}"
        )
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        _fail(f"key and value head dims must be <= {MAX_HEAD_DIM}, got K={K}, V={V}")
    if K < 1 or V < 1 or H < 1:
        _fail(f"empty head dims: H={H}, K={K}, V={V}")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        _fail(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if content_grad not in CONTENT_GRAD_MODES:
        _fail(f"content_grad must be one of {CONTENT_GRAD_MODES}, got {content_grad!r}")
    devices = {t.device for t in tensors.values()}
    if len(devices) != 1:
        _fail(f"all inputs must be on one device, got {sorted(str(d) for d in devices)}")

    r = 0
    if (u_down is None) != (u_up is None):
        _fail("u_down and u_up must both be given (content on) or both be None (content off)")
    if u_down is not None:
        if u_down.dim() != 3 or u_down.shape[0] != H or u_down.shape[2] != V:
            _fail(f"u_down must be [H, r, V] = [{H}, r, {V}], got {_shape(u_down)}")
        r = u_down.shape[1]
        if u_up.shape != (H, K, r):
            _fail(f"u_up must be [H, K, r] = [{H}, {K}, {r}], got {_shape(u_up)}")
        for name, t in (("u_down", u_down), ("u_up", u_up)):
            if t.dtype not in FLOAT_DTYPES:
                _fail(f"{name} must be a floating tensor, got {t.dtype}")
            if t.device != q.device:
                _fail(f"{name} is on {t.device}, inputs are on {q.device}")

    n_seq = B
    if cu_seqlens is not None:
        if cu_seqlens.dtype not in (torch.int32, torch.int64) or cu_seqlens.dim() != 1:
            _fail(f"cu_seqlens must be a 1-D int32/int64 tensor, got {cu_seqlens.dtype} {_shape(cu_seqlens)}")
        if B != 1:
            _fail(f"with cu_seqlens the batch dimension must be 1 (packed sequences), got B={B}")
        cs = cu_seqlens.tolist()
        if len(cs) < 2 or cs[0] != 0 or cs[-1] != T or any(b < a_ for a_, b in zip(cs[:-1], cs[1:])):
            _fail(f"cu_seqlens must start at 0, end at T={T} and be non-decreasing, got {cs}")
        n_seq = len(cs) - 1

    if initial_state is not None:
        st = initial_state
        if not isinstance(st, CarveState):
            _fail(f"initial_state must be a CarveState, got {type(st).__name__}")
        if st.S.shape != (n_seq, H, K, V):
            _fail(f"initial_state.S must be [N, H, K, V] = [{n_seq}, {H}, {K}, {V}], got {_shape(st.S)}")
        for name in ("m_prev", "o_sum"):
            t = getattr(st, name)
            if t.shape != (n_seq, H, V):
                _fail(f"initial_state.{name} must be [N, H, V] = [{n_seq}, {H}, {V}], got {_shape(t)}")
        if st.pos.shape != (n_seq,):
            _fail(f"initial_state.pos must be [N] = [{n_seq}], got {_shape(st.pos)}")
        pos = st.pos.tolist()
        if any(p < 0 or p >= chunk_size for p in pos):
            _fail(f"initial_state.pos must lie in [0, chunk_size={chunk_size}), got {pos}")

    if check_finite is None:
        check_finite = check_finite_enabled()
    if check_finite:
        for name, t in tensors.items():
            if not torch.isfinite(t).all():
                _fail(f"{name} contains NaN or Inf")
        if (g > 0).any():
            _fail("g is a log-decay and must be <= 0 everywhere")
        if ((w < 0) | (w > 1)).any():
            _fail("w is a write gate and must lie in [0, 1]")
    return CarveShapes(B, T, H, K, V, r, vector_w, n_seq)


def default_scale(K: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(K) if scale is None else float(scale)


def seq_bounds(shapes: CarveShapes, cu_seqlens: torch.Tensor | None) -> list[tuple[int, int, int]]:
    """(batch index, start, end) per sequence."""
    if cu_seqlens is None:
        return [(b, 0, shapes.T) for b in range(shapes.B)]
    cs = cu_seqlens.tolist()
    return [(0, cs[i], cs[i + 1]) for i in range(len(cs) - 1)]
