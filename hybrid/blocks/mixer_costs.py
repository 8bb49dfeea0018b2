"""Analytic per-layer costs of each token-mixer family, from a normalised block dict alone.

Each block kind registers one ``MixerCosts`` in ``hybrid.blocks.spec``; the analytic model
(``hybrid.analytic.costs``) sums them over a model's layers. Every formula is derived in
docs/analytic.md. Conventions: one multiply-add = 2 FLOPs; "per token" means averaged over the tokens
of a causal sequence of length n (training) or at context t (decode); ``b`` is bytes per activation
element (2 for bf16 autocast, 4 for fp32); recurrent states are fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

STATE_BYTES = 4  # recurrent state and chunk accumulators are fp32
ATTN_BWD_FACTOR = 2.5  # FlashAttention backward: 5 matmuls (with recompute) vs 2 in the forward
REC_BWD_FACTOR = 2.0  # chunked delta rule backward: recompute + gradient passes ~ 2x the forward


@dataclass(frozen=True)
class MixerCosts:
    """The analytic cost functions of one mixer family.

    - ``matmul_params(block, d, params)``: weights applied once per token (2 FLOPs each, forward);
      ``params`` is the kind's per-tensor-group parameter count;
    - ``core_fwd_flops(block, n)``: sequence-mixing FLOPs per token, forward, at training length n;
    - ``bwd_factor``: backward core FLOPs as a multiple of the forward;
    - ``core_decode_flops(block, t)``: sequence-mixing FLOPs for one new token at context t;
    - ``cache_bytes(block, t, b)``: decode memory of one sequence after t tokens, {"core", "extra"};
    - ``saved_bytes_per_token(block, d, b, params)``: activations kept for the backward pass."""

    matmul_params: Callable[[dict, int, dict], float]
    core_fwd_flops: Callable[[dict, int], float]
    bwd_factor: float
    core_decode_flops: Callable[[dict, int], float]
    cache_bytes: Callable[[dict, int, int], dict]
    saved_bytes_per_token: Callable[[dict, int, int, dict], float]


def mean_context(n: int, window: int | None) -> float:
    """Mean number of keys a query sees in a causal sequence of length n (window W or full)."""
    if window is None or window >= n:
        return (n + 1) / 2
    w = window
    return (w * (w + 1) / 2 + (n - w) * w) / n


# --------------------------------------------------------------------------------------------------
# recurrent (CARVE, GDN-2): chunked delta rule with a [K, V] state per head


def _rec_matmul_params(block: dict, d: int, p: dict) -> float:
    """Per-token weights; the per-chunk content weights are amortised over the chunk."""
    per_token = (p["qkv_proj"] + p["short_conv"] + p["decay"] - block["heads"] * (1 + block["head_dim"])
                 + p["erase_proj"] + p["write_proj"] + p["out_gate"] + p["o_proj"])
    return per_token + p.get("content", 0) / block["chunk_size"]


def _rec_core_fwd(block: dict, n: int) -> float:
    H, K, V = block["heads"], block["head_dim"], block["value_dim"]
    C = min(block["chunk_size"], n)
    return H * (6 * K * V + C * (6 * K + 4 * V) + C * C / 3)


def _rec_core_decode(block: dict, t: int) -> float:
    H, K, V = block["heads"], block["head_dim"], block["value_dim"]
    return 7 * H * K * V


def _rec_cache(block: dict, t: int, b: int) -> dict:
    H, K, V, c = block["heads"], block["head_dim"], block["value_dim"], block["conv_size"]
    core = H * K * V * STATE_BYTES
    extra = (c - 1) * (2 * H * K + H * V) * b + 2 * H * V * STATE_BYTES + 8  # conv, m_prev/o_sum, pos
    return {"core": core, "extra": extra}


def _rec_saved(block: dict, d: int, b: int, p: dict) -> float:
    H, K, V, R = block["heads"], block["head_dim"], block["value_dim"], block["gate_rank"]
    C = block["chunk_size"]
    width = 2 * H * K + H * V
    wgate = p["write_proj"] // d  # write-gate outputs per token
    act = 2 * d + 3 * width + 2 * H * K + 2 * R + H * K + wgate + 4 * H * V
    fp32 = 4 * H * K + 2 * H * K  # fp32 copies for the L2 norm, the decay pre-activation and g
    return act * b + fp32 * 4 + H * K * V * STATE_BYTES / C


RECURRENT = MixerCosts(_rec_matmul_params, _rec_core_fwd, REC_BWD_FACTOR, _rec_core_decode, _rec_cache,
                       _rec_saved)


# --------------------------------------------------------------------------------------------------
# softmax attention with a KV cache, full or sliding window


def _att_matmul_params(block: dict, d: int, p: dict) -> float:
    return float(sum(p.values()))


def _att_core_fwd(block: dict, n: int) -> float:
    return 4 * block["heads"] * block["head_dim"] * mean_context(n, block["window"])


def _att_context(block: dict, t: int) -> int:
    return t if block["window"] is None else min(t, block["window"])


def _att_core_decode(block: dict, t: int) -> float:
    return 4 * block["heads"] * block["head_dim"] * _att_context(block, t)


def _att_cache(block: dict, t: int, b: int) -> dict:
    ctx = _att_context(block, t)
    core = 2 * ctx * block["kv_heads"] * block["head_dim"] * b
    return {"core": core, "extra": ctx * (8 + 1)}  # int64 RoPE position + bool validity per cached slot


def _att_saved(block: dict, d: int, b: int, p: dict) -> float:
    Hq, G, D = block["heads"], block["kv_heads"], block["head_dim"]
    act = 2 * d + (Hq + 2 * G) * D + (Hq + G) * D + Hq * D
    return act * b + (Hq + G) * D * 4 + Hq * 4  # fp32 RoPE temporaries, logsumexp


ATTENTION = MixerCosts(_att_matmul_params, _att_core_fwd, ATTN_BWD_FACTOR, _att_core_decode, _att_cache,
                       _att_saved)
