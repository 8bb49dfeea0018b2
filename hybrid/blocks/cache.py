"""The hybrid cache: KV cache for attention layers, conv state + CarveState for CARVE / GDN-2 layers.

``HybridCache`` subclasses transformers' ``Cache`` so that ``generate()`` accepts it, but it holds its
own per-layer objects:

- ``AttentionCacheLayer``: keys/values ``[B, G, L, D]`` plus, per slot, the token's RoPE position and
  whether it is a real token (``valid``; left padding is stored as invalid slots). Masks are built
  from those positions, so padding never shifts anything. A sliding-window layer keeps only its last
  ``window`` slots.
- ``RecurrentCacheLayer``: the short-convolution state ``[B, C, conv_size - 1]`` (the last real inputs
  of each row) and the operator's ``CarveState`` (per row: S, m_prev, o_sum, pos).

The cache also counts ``seen_tokens`` (columns consumed, padding included; what
``get_seq_length()`` returns) and ``real_len [B]`` (real tokens per row, the next RoPE position).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from hybrid.ops.carve import CarveState

from .spec import is_recurrent


class _LayerBase:
    is_compileable = False
    is_croppable = False
    is_sliding = False
    supports_early_init = False

    def offload(self):
        pass

    def prefetch(self):
        pass

    def crop(self, tokens_to_remove: int):
        raise NotImplementedError("HybridCache cannot be cropped: recurrent states cannot be rolled back")

    def get_max_length(self) -> int:
        return -1

    def reorder_cache(self, beam_idx: torch.LongTensor):
        self.batch_select_indices(beam_idx)

    def batch_repeat_interleave(self, repeats: int):
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor):
        self._map(lambda t: t[indices.to(t.device)])


class AttentionCacheLayer(_LayerBase):
    def __init__(self, window: int | None = None):
        self.window = window
        self.is_sliding = window is not None
        self.reset()

    def reset(self):
        self.keys = self.values = self.pos = self.valid = None

    @property
    def is_initialized(self) -> bool:
        return self.keys is not None

    def get_seq_length(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def get_max_length(self) -> int:
        return -1 if self.window is None else self.window

    def _map(self, fn):
        if self.keys is not None:
            self.keys, self.values, self.pos, self.valid = (fn(t) for t in (self.keys, self.values, self.pos,
                                                                           self.valid))

    def update(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor):
        """Append ``k, v [B, G, T, D]`` with ``pos, valid [B, T]``; return everything cached (before trimming)."""
        if self.keys is not None:
            k = torch.cat([self.keys, k], dim=2)
            v = torch.cat([self.values, v], dim=2)
            pos = torch.cat([self.pos, pos], dim=1)
            valid = torch.cat([self.valid, valid], dim=1)
        keep = k.shape[2] if self.window is None else min(self.window, k.shape[2])
        start = k.shape[2] - keep
        self.keys, self.values = k[:, :, start:], v[:, :, start:]
        self.pos, self.valid = pos[:, start:], valid[:, start:]
        return k, v, pos, valid


class RecurrentCacheLayer(_LayerBase):
    def __init__(self):
        self.reset()

    def reset(self):
        self.conv_state: torch.Tensor | None = None
        self.state: CarveState | None = None

    @property
    def is_initialized(self) -> bool:
        return self.state is not None

    def get_seq_length(self) -> int:
        return 0

    def _map(self, fn):
        if self.state is not None:
            self.conv_state = fn(self.conv_state)
            s = self.state
            self.state = CarveState(fn(s.S), fn(s.m_prev), fn(s.o_sum), fn(s.pos))


class HybridCache(Cache):
    """Per-layer cache of a ``HybridForCausalLM``; build it with ``HybridCache(config)``."""

    def __init__(self, config):
        layers = []
        for block in config.layers:
            if is_recurrent(block):
                layers.append(RecurrentCacheLayer())
            else:
                layers.append(AttentionCacheLayer(block["window"]))
        try:
            super().__init__(layers=layers)
        except TypeError:  # a transformers version whose Cache takes other arguments
            self.layers = layers
            self.offloading = False
        self.seen_tokens = 0
        self.real_len: torch.Tensor | None = None

    # -- what generate() and users query
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.seen_tokens + query_length, 0

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        return False

    @property
    def is_linear(self) -> list[bool]:
        return [isinstance(layer, RecurrentCacheLayer) for layer in self.layers]

    @property
    def batch_size(self) -> int:
        return -1 if self.real_len is None else int(self.real_len.shape[0])

    def reset(self):
        for layer in self.layers:
            layer.reset()
        self.seen_tokens = 0
        self.real_len = None

    def advance(self, valid: torch.Tensor):
        """Record that the model consumed the columns ``valid [B, T]`` (True = real token)."""
        n = valid.sum(1).to(torch.long)
        self.real_len = n if self.real_len is None else self.real_len + n
        self.seen_tokens += valid.shape[1]

    def reorder_cache(self, beam_idx: torch.LongTensor):
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor):
        for layer in self.layers:
            layer.batch_select_indices(indices)
        if self.real_len is not None:
            self.real_len = self.real_len[indices.to(self.real_len.device)]

    def batch_repeat_interleave(self, repeats: int):
        for layer in self.layers:
            layer.batch_repeat_interleave(repeats)
        if self.real_len is not None:
            self.real_len = self.real_len.repeat_interleave(repeats, dim=0)

    def crop(self, tokens_to_remove: int):
        raise NotImplementedError("HybridCache cannot be cropped: recurrent states cannot be rolled back")

    def __repr__(self):
        kinds = ["recurrent" if lin else "attention" for lin in self.is_linear]
        return f"HybridCache(seen_tokens={self.seen_tokens}, layers={kinds})"
