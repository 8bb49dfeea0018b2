"""Host-side helpers shared by the Triton launchers (chunk.py, wide.py, decode.py).

- ``interpreting()``: whether Triton runs its CPU interpreter (``TRITON_INTERPRET=1``, Triton's own
  variable), where the kernels compute in fp32 "ieee" and run one program after another.
- ``empty()``: a kernel output buffer. The correctness harness sets ``POISON`` so that buffers start
  as NaN and an element a kernel forgot to write shows up as a failed comparison.
- ``sequence_layout()`` and ``tile_grid()``: where each sequence starts, its length, start position
  inside its first chunk, tile count and buffer offset (one extra slot per sequence for its final
  values), and for the parallel launches each tile's sequence and index.
"""

from __future__ import annotations

import os

import torch
import triton

POISON = False


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def empty(*shape, device, dtype) -> torch.Tensor:
    if POISON:
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(*shape, device=device, dtype=dtype)


def block(x: int) -> int:
    """Padded tile size of a head dim: the next power of two, at least 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(x))


def sequence_layout(shp, q, cu_seqlens, initial_state, C: int):
    """(starts, lens, pos, ns, offs, total) per sequence on a grid of C-row tiles. Reads the lengths
    and positions back to the host once (the buffer size depends on them)."""
    dev = q.device
    if cu_seqlens is None:
        starts = torch.arange(shp.B, device=dev, dtype=torch.int64) * shp.T
        lens = torch.full((shp.B,), shp.T, device=dev, dtype=torch.int64)
    else:
        cs = cu_seqlens.to(device=dev, dtype=torch.int64)
        starts, lens = cs[:-1].contiguous(), (cs[1:] - cs[:-1]).contiguous()
    if initial_state is not None:
        pos = initial_state.pos.to(device=dev, dtype=torch.int64).contiguous()
    else:
        pos = torch.zeros_like(lens)
    ns = (pos + lens + C - 1) // C
    sizes = ns + 1
    offs = torch.cumsum(sizes, 0) - sizes
    total = int(sizes.sum().item())
    return starts, lens, pos, ns, offs.contiguous(), total


def tile_grid(shp, q, cu_seqlens, initial_state, SC: int):
    """``sequence_layout`` plus (n_tiles, tile sequence, tile index) for the parallel launches. A
    fixed-length batch without a carried state has the same grid for every sequence, built here without
    reading anything back from the GPU (a device sync before the first launch would leave the GPU idle
    while the host prepares the launches); varlen batches and carried states need their lengths and
    positions on the host once."""
    dev = q.device
    i64 = torch.int64
    if cu_seqlens is None and initial_state is None:
        N, ns_i = shp.n_seq, -(-shp.T // SC)
        starts = torch.arange(N, device=dev, dtype=i64) * shp.T
        lens = torch.full((N,), shp.T, device=dev, dtype=i64)
        pos = torch.zeros(N, device=dev, dtype=i64)
        ns = torch.full((N,), ns_i, device=dev, dtype=i64)
        offs = torch.arange(N, device=dev, dtype=i64) * (ns_i + 1)
        total, n_chunks = N * (ns_i + 1), N * ns_i
        if n_chunks == 0:
            return starts, lens, pos, ns, offs, total, 0, None, None
        tiles = torch.arange(n_chunks, device=dev, dtype=i64)
        return starts, lens, pos, ns, offs, total, n_chunks, tiles // ns_i, tiles % ns_i
    starts, lens, pos, ns, offs, total = sequence_layout(shp, q, cu_seqlens, initial_state, SC)
    n_chunks = total - shp.n_seq
    if n_chunks == 0:
        return starts, lens, pos, ns, offs, total, 0, None, None
    seqs = torch.arange(shp.n_seq, device=dev, dtype=i64)
    cseq = torch.repeat_interleave(seqs, ns, output_size=n_chunks)
    first = torch.cumsum(ns, 0) - ns
    cj = torch.arange(n_chunks, device=dev, dtype=i64) - first[cseq]
    return starts, lens, pos, ns, offs, total, n_chunks, cseq, cj
