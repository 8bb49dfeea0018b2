"""Which path the fused operations take: their Triton kernels on CUDA tensors (or under Triton's CPU
interpreter, ``TRITON_INTERPRET=1``), their PyTorch definition everywhere else."""

from __future__ import annotations

import importlib.util
import os

import torch


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_TRITON = importlib.util.find_spec("triton") is not None


def triton_importable() -> bool:
    return _TRITON


BACKENDS = ("auto", "torch", "triton")


def use_triton(t: torch.Tensor, backend: str = "auto") -> bool:
    """Whether an op runs its Triton kernels on ``t``. ``auto``: on a CUDA tensor, or on any tensor under
    the interpreter; ``torch`` never; ``triton`` always (an error when Triton cannot run there)."""
    if backend not in BACKENDS:
        raise ValueError(f"ops backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    able = triton_importable() and (t.is_cuda or interpreting())
    if backend == "triton" and not able:
        raise ValueError(f"ops backend 'triton' needs Triton and a CUDA tensor (or TRITON_INTERPRET=1), got {t.device}")
    return able


def next_pow2(n: int, least: int = 1) -> int:
    p = least
    while p < n:
        p *= 2
    return p
