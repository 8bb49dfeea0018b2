"""Which path the fused operations take: their Triton kernels on CUDA tensors (or under Triton's CPU
interpreter, ``TRITON_INTERPRET=1``), their PyTorch definition everywhere else."""

from __future__ import annotations

import importlib.util
import os

import torch


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(t: torch.Tensor) -> bool:
    """True when the Triton kernels run on ``t``: a CUDA tensor, or any tensor under the interpreter."""
    return triton_importable() and (t.is_cuda or interpreting())


def next_pow2(n: int, least: int = 1) -> int:
    p = least
    while p < n:
        p *= 2
    return p
