"""RoPE of one new token's queries and keys, and its keys and values written into a static KV buffer,
in one Triton kernel (the attention layers' decode step).

Rotate-half RoPE at position ``p`` with frequencies ``inv_freq [D/2]`` (fp32):
``x1' = x1 cos - x2 sin``, ``x2' = x2 cos + x1 sin`` with ``x = [x1, x2]`` and angle ``p * inv_freq``.
The token goes to slot ``p % slots`` of its row; ``slot_pos`` records ``p`` there."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def rope_kv_write_kernel(q, k, v, pos, inv_freq, q_out, keys, values, slot_pos, H, G, SLOTS,
                         D: tl.constexpr, HALF: tl.constexpr, BH: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    p = tl.load(pos + b)
    i = tl.arange(0, BH)
    m = i < HALF
    ang = p.to(tl.float32) * tl.load(inv_freq + i, mask=m, other=0.0)
    c = tl.cos(ang)
    s = tl.sin(ang)
    if j < H:
        src = q + (b * H + j) * D
        dst = q_out + (b * H + j) * D
    else:
        src = k + (b * G + (j - H)) * D
        dst = keys + ((b * G + (j - H)) * SLOTS + p % SLOTS) * D
    x1 = tl.load(src + i, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF + i, mask=m, other=0.0).to(tl.float32)
    tl.store(dst + i, (x1 * c - x2 * s).to(dst.dtype.element_ty), mask=m)
    tl.store(dst + HALF + i, (x2 * c + x1 * s).to(dst.dtype.element_ty), mask=m)
    if j >= H:
        vsrc = v + (b * G + (j - H)) * D
        vdst = values + ((b * G + (j - H)) * SLOTS + p % SLOTS) * D
        tl.store(vdst + i, tl.load(vsrc + i, mask=m, other=0.0).to(vdst.dtype.element_ty), mask=m)
        tl.store(vdst + HALF + i, tl.load(vsrc + HALF + i, mask=m, other=0.0).to(vdst.dtype.element_ty), mask=m)
        if j == H:
            tl.store(slot_pos + b * SLOTS + p % SLOTS, p)


def rope_kv_write(q, k, v, pos, inv_freq, keys, values, slot_pos) -> torch.Tensor:
    """``q [B, 1, H, D]``, ``k, v [B, 1, G, D]``, ``pos [B]`` (int64), ``inv_freq [D/2]`` (fp32); writes
    the rotated keys and the values into ``keys, values [B, G, slots, D]`` and ``pos`` into
    ``slot_pos [B, slots]``; returns the rotated queries (``q``'s shape and dtype)."""
    B, _, H, D = q.shape
    G, slots = keys.shape[1], keys.shape[2]
    if D % 2 or k.shape != (B, 1, G, D) or v.shape != k.shape or inv_freq.shape != (D // 2,):
        raise ValueError(f"rope_kv_write: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} and "
                         f"inv_freq {tuple(inv_freq.shape)} do not match a [B, G, slots, {D}] buffer")
    q_out = torch.empty_like(q, memory_format=torch.contiguous_format)
    rope_kv_write_kernel[(B, H + G)](q.contiguous(), k.contiguous(), v.contiguous(), pos, inv_freq, q_out, keys,
                                     values, slot_pos, H, G, slots, D=D, HALF=D // 2,
                                     BH=max(2, triton.next_power_of_2(D // 2)), num_warps=1)
    return q_out
