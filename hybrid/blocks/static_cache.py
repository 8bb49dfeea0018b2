"""The static hybrid cache: every buffer allocated once, up to a maximum length, and updated in place.

A decode step through it has fixed shapes and reads no value back to the host, so the whole step can be
captured as a CUDA graph and replayed (``decode_graph``). Per layer:

- ``StaticAttentionLayer``: keys/values ``[B, G, slots, D]`` and ``slot_pos [B, slots]``, the RoPE
  position held by each slot (-1: empty). The token at position ``p`` goes to slot ``p % slots``:
  ``slots = max_len`` for full attention, ``slots = window`` for a sliding-window layer (a ring buffer).
  A row's real tokens fill positions 0, 1, ... in order, so every filled slot holds a position at or
  before the newest token's and, in a ring, within its window: the query sees exactly the filled slots.
- ``StaticRecurrentLayer``: the short-convolution state ``[B, C, conv_size - 1]`` (fp32) and the CARVE
  state (fp32 ``S [B, H, K, V]``, chunk mean ``m_prev`` and running sum ``o_sum [B, H, V]``, int64 chunk
  position ``pos [B]``).

``lengths [B]`` (int64, on the device) counts each row's real tokens: the next RoPE position. The cache
is filled by one prefill (``load`` copies a dynamic ``HybridCache`` in), then takes one token per row per
step. ``capacity`` rows are allocated; rows past the real batch (``rows``) are padding that a captured
step computes and nobody reads.
"""

from __future__ import annotations

import functools
import importlib

import torch
from transformers.cache_utils import Cache

from hybrid.ops.carve import CarveState

from .cache import AttentionCacheLayer, HybridCache, RecurrentCacheLayer
from .spec import is_recurrent


@functools.lru_cache(maxsize=1)
def _fused_rope_write():
    try:
        return importlib.import_module("hybrid.ops.rope_kv_write").rope_kv_write
    except ImportError:  # no Triton
        return None


class _StaticLayer:
    is_compileable = False
    is_croppable = False
    is_sliding = False
    supports_early_init = False
    is_initialized = True

    def buffers(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def step_buffers(self) -> list[torch.Tensor]:
        """What decoding steps overwrite and a restore must put back (StaticHybridCache.snapshot)."""
        return self.buffers()

    def offload(self):
        pass

    def prefetch(self):
        pass

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1

    def crop(self, tokens_to_remove: int):
        raise NotImplementedError("StaticHybridCache cannot be cropped: recurrent states cannot be rolled back")

    def select_rows(self, indices: torch.Tensor):
        """Rows ``indices`` become rows 0 .. len(indices) - 1 (in place; the buffers stay where they are)."""
        for t in self.buffers():
            t[: indices.numel()].copy_(t[indices.to(t.device)])


class StaticAttentionLayer(_StaticLayer):
    def __init__(self, capacity: int, kv_heads: int, head_dim: int, slots: int, window: int | None, *,
                 device, dtype):
        self.window = window
        self.is_sliding = window is not None
        self.slots = slots
        self.keys = torch.zeros(capacity, kv_heads, slots, head_dim, device=device, dtype=dtype)
        self.values = torch.zeros_like(self.keys)
        self.slot_pos = torch.full((capacity, slots), -1, device=device, dtype=torch.long)
        self.row_index = torch.arange(capacity, device=device)

    def buffers(self):
        return [self.keys, self.values, self.slot_pos]

    def get_max_length(self) -> int:
        return self.slots

    def step_buffers(self):
        # a step fills a slot beyond the real tokens: marking it empty again undoes it, unless the slots
        # are a window's ring, where it overwrote an older token's key and value
        return [self.keys, self.values, self.slot_pos] if self.is_sliding else [self.slot_pos]

    def reset(self):
        self.slot_pos.fill_(-1)  # empty slots are masked; their stale keys and values are never weighted

    def load(self, dyn: AttentionCacheLayer, start: int = 0):
        """Copy the real tokens of a dynamic layer (its rows become rows ``start ..``) into their slots."""
        if dyn.keys is None:
            return
        i, j = torch.nonzero(dyn.valid, as_tuple=True)
        p = dyn.pos[i, j].to(torch.long)
        slot = p % self.slots
        b = i + start
        self.slot_pos[start:start + dyn.keys.shape[0]].fill_(-1)
        self.keys[b, :, slot] = dyn.keys[i, :, j].to(self.keys.dtype)
        self.values[b, :, slot] = dyn.values[i, :, j].to(self.values.dtype)
        self.slot_pos[b, slot] = p

    def step(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
        """One token per row: RoPE on ``q [B, 1, H, D]`` and ``k [B, 1, G, D]`` at positions ``pos [B]``,
        ``k, v`` written into their slots, then ``q`` attends over the buffer. Fixed shapes, no host sync.
        Returns ``[B, 1, H, D]``."""
        op = _fused_rope_write() if q.is_cuda else None
        if op is None:
            return self.attend(self.write(q, k, v, pos, theta))
        dt = self.keys.dtype  # one dtype for the kernel's query and key branches
        qr = op(q.to(dt), k.to(dt), v.to(dt), pos, self.inv_freq(theta, q.shape[-1]), self.keys, self.values,
                self.slot_pos)
        return self.attend(qr).to(q.dtype)

    def inv_freq(self, theta: float, head_dim: int) -> torch.Tensor:
        """RoPE frequencies ``[D/2]`` (fp32), made once per layer (as ``rope_angles`` makes them)."""
        if getattr(self, "_inv_freq", None) is None:
            ar = torch.arange(0, head_dim, 2, device=self.keys.device, dtype=torch.float32)
            self._inv_freq = 1.0 / (theta ** (ar / head_dim))
        return self._inv_freq

    def write(self, q, k, v, pos, theta: float) -> torch.Tensor:
        """The unfused form of the fused RoPE + write: the layer's own RoPE, then indexed writes.
        Returns the rotated ``q``."""
        from .attention import apply_rope, rope_angles  # (attention imports this module)

        cos, sin = rope_angles(pos[:, None], q.shape[-1], theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        slot = pos % self.slots
        self.keys[self.row_index, :, slot] = k[:, 0].to(self.keys.dtype)
        self.values[self.row_index, :, slot] = v[:, 0].to(self.values.dtype)
        self.slot_pos[self.row_index, slot] = pos
        return q

    def attend(self, q: torch.Tensor) -> torch.Tensor:
        """Rotated ``q [B, 1, H, D]`` over the buffer, this token already in it. Every filled slot is
        visible: no slot holds a later position than this token's, and a ring of ``window`` slots holds
        only the last ``window`` positions."""
        B, _, H, D = q.shape
        G = self.keys.shape[1]
        # scores in the cache dtype (as eager attention computes them), softmax in fp32 inside; three
        # passes over [B, H, slots]: product, mask, softmax
        qg = (q.reshape(B, G, H // G, D) * D ** -0.5).to(self.keys.dtype)
        s = torch.matmul(qg, self.keys.transpose(-1, -2))  # [B, G, H/G, slots]
        s.masked_fill_((self.slot_pos < 0)[:, None, None, :], float("-inf"))
        p = torch.softmax(s, dim=-1)  # every row sees at least its own token
        o = torch.matmul(p, self.values)  # [B, G, H/G, D]
        return o.reshape(B, 1, H, D).to(q.dtype)


class StaticRecurrentLayer(_StaticLayer):
    def __init__(self, capacity: int, channels: int, conv_size: int, H: int, K: int, V: int,
                 lengths: torch.Tensor, *, device):
        f32 = torch.float32
        self.lengths = lengths  # the cache's real-token counts (read by the fused step; not owned here)
        self.conv_state = torch.zeros(capacity, channels, conv_size - 1, device=device, dtype=f32)
        self.S = torch.zeros(capacity, H, K, V, device=device, dtype=f32)
        self.m_prev = torch.zeros(capacity, H, V, device=device, dtype=f32)
        self.o_sum = torch.zeros(capacity, H, V, device=device, dtype=f32)
        self.pos = torch.zeros(capacity, device=device, dtype=torch.long)

    def buffers(self):
        return [self.conv_state, self.S, self.m_prev, self.o_sum, self.pos]

    @property
    def state(self) -> CarveState:
        return CarveState(self.S, self.m_prev, self.o_sum, self.pos)

    def reset(self):
        for t in self.buffers():
            t.zero_()

    def load(self, dyn: RecurrentCacheLayer, start: int = 0):
        if dyn.state is None:
            return
        rows = slice(start, start + dyn.state.S.shape[0])
        self.conv_state[rows].copy_(dyn.conv_state)
        st = dyn.state
        for mine, theirs in ((self.S, st.S), (self.m_prev, st.m_prev), (self.o_sum, st.o_sum), (self.pos, st.pos)):
            mine[rows].copy_(theirs)


class StaticHybridCache(Cache):
    """Preallocated cache of a ``HybridForCausalLM`` for ``capacity`` rows and ``max_len`` positions.

    ``StaticHybridCache(config, capacity, max_len, device=..., dtype=...)``; ``dtype`` is the dtype of the
    attention keys/values (the model's compute dtype). Pass it to ``generate`` (``cache=`` or
    ``past_key_values=``) or to the model's forward: the first call is the prefill, every later call
    takes one new token per row."""

    def __init__(self, config, capacity: int, max_len: int, *, device=None, dtype=torch.float32):
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"StaticHybridCache: capacity must be a positive number of rows, got {capacity!r}")
        if not isinstance(max_len, int) or max_len < 1:
            raise ValueError(f"StaticHybridCache: max_len must be a positive number of tokens, got {max_len!r}")
        self.lengths = torch.zeros(capacity, device=device, dtype=torch.long)
        layers = []
        for block in config.layers:
            if is_recurrent(block):
                H, K, V = block["heads"], block["head_dim"], block["value_dim"]
                layers.append(StaticRecurrentLayer(capacity, 2 * H * K + H * V, block["conv_size"], H, K, V,
                                                   self.lengths, device=device))
            else:
                w = block["window"]
                slots = max_len if w is None or w >= max_len else w
                layers.append(StaticAttentionLayer(capacity, block["kv_heads"], block["head_dim"], slots, w,
                                                   device=device, dtype=dtype))
        try:
            super().__init__(layers=layers)
        except TypeError:  # a transformers version whose Cache takes other arguments
            self.layers = layers
            self.offloading = False
        # (no `device` / `dtype` attributes: transformers' Cache may define those names)
        self.capacity, self.max_len = capacity, max_len
        self.rows = 0
        self.seen_tokens = 0
        self.step_fn = None  # a captured decode step over these buffers (decode_graph), or None: eager

    # -- what generate() and users query
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return self.max_len

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
        return [isinstance(layer, StaticRecurrentLayer) for layer in self.layers]

    @property
    def batch_size(self) -> int:
        return self.rows

    @property
    def real_len(self) -> torch.Tensor:
        return self.lengths[: self.rows]

    def reset(self):
        """Empty the cache in place (a captured step keeps pointing at the same buffers)."""
        for layer in self.layers:
            layer.reset()
        self.lengths.zero_()
        self.rows = 0
        self.seen_tokens = 0

    def load(self, dyn: HybridCache, start: int = 0):
        """Take the state of a dynamic cache after a prefill: its rows become rows ``start ..`` of this
        cache. ``start=0`` empties the cache first; a later ``start`` adds rows prefilled apart (long
        prompts, one group of rows at a time)."""
        if not isinstance(dyn, HybridCache) or dyn.real_len is None:
            raise ValueError("StaticHybridCache.load needs a HybridCache that has seen a prefill")
        n = int(dyn.real_len.shape[0])
        if start < 0 or start + n > self.capacity:
            raise ValueError(f"rows {start} .. {start + n - 1} of a prefill do not fit a StaticHybridCache of "
                             f"{self.capacity} rows")
        if dyn.seen_tokens > self.max_len:
            raise ValueError(f"the prefill has {dyn.seen_tokens} tokens, this StaticHybridCache holds {self.max_len}")
        if start == 0:
            self.reset()
        elif dyn.seen_tokens != self.seen_tokens:
            raise ValueError(f"rows prefilled apart must have one width: {dyn.seen_tokens} != {self.seen_tokens}")
        for mine, theirs in zip(self.layers, dyn.layers):
            mine.load(theirs, start)
        self.lengths[start:start + n].copy_(dyn.real_len)
        self.rows, self.seen_tokens = max(self.rows, start + n), dyn.seen_tokens

    def snapshot(self):
        """Copies of what decoding steps change (recurrent states, slot occupancy, ring slots, lengths), for
        ``restore``: steps taken in between are undone, in place (a captured step keeps its buffers)."""
        return ([[t.clone() for t in layer.step_buffers()] for layer in self.layers], self.lengths.clone(),
                self.rows, self.seen_tokens)

    def restore(self, snap):
        saved, lengths, self.rows, self.seen_tokens = snap
        for layer, copies in zip(self.layers, saved):
            for t, c in zip(layer.step_buffers(), copies):
                t.copy_(c)
        self.lengths.copy_(lengths)

    def reorder_cache(self, beam_idx: torch.LongTensor):
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor):
        if indices.numel() > self.capacity:
            raise ValueError(f"cannot select {indices.numel()} rows from a StaticHybridCache of {self.capacity}")
        for layer in self.layers:
            layer.select_rows(indices)
        self.lengths[: indices.numel()].copy_(self.lengths[indices.to(self.lengths.device)])
        self.rows = int(indices.numel())

    def batch_repeat_interleave(self, repeats: int):
        idx = torch.arange(self.rows).repeat_interleave(repeats)
        self.batch_select_indices(idx)

    def crop(self, tokens_to_remove: int):
        raise NotImplementedError("StaticHybridCache cannot be cropped: recurrent states cannot be rolled back")

    def __repr__(self):
        return (f"StaticHybridCache(rows={self.rows}/{self.capacity}, max_len={self.max_len}, "
                f"seen_tokens={self.seen_tokens}, graph={self.step_fn is not None})")
