"""Init functions that respect transformers' "already loaded" flags when transformers provides them."""

from __future__ import annotations

import torch
from torch import nn

try:  # transformers >= 5: skips tensors that were loaded from a checkpoint
    from transformers import initialization as _hf
except ImportError:  # pragma: no cover - older transformers
    _hf = None

_impl = _hf if _hf is not None else nn.init


def xavier_uniform_(t: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    return _impl.xavier_uniform_(t, gain=gain)


def normal_(t: torch.Tensor, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    return _impl.normal_(t, mean=mean, std=std)


def uniform_(t: torch.Tensor, a: float, b: float) -> torch.Tensor:
    return _impl.uniform_(t, a=a, b=b)


def zeros_(t: torch.Tensor) -> torch.Tensor:
    return _impl.zeros_(t)


def ones_(t: torch.Tensor) -> torch.Tensor:
    return _impl.ones_(t)


def copy_(t: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    if _hf is not None:
        return _hf.copy_(t, value)
    with torch.no_grad():
        return t.copy_(value)
