"""Exact parameter counts of one token mixer, per tensor group, from its normalised block dict.

Each block kind registers one of these formulas in ``hybrid.blocks.spec``; ``hybrid.blocks.params``
adds the pre-norm and the MLP, and a test checks the sums against ``sum(p.numel())`` of built modules.

Shapes of the recurrent (CARVE / GDN-2) layer with ``H`` heads, key dim ``K``, value dim ``V``,
gate rank ``R``, conv width ``c`` and content rank ``r`` (no linear layer has a bias)::

    q_proj, k_proj   d -> H*K            2 d H K
    v_proj           d -> H*V            d H V
    short convs      depthwise, width c  c (2 H K + H V)
    f_proj           d -> R -> H*K       d R + R H K
    A_log, dt_bias   [H], [H*K]          H + H K
    b_proj           d -> H*K            d H K        (erase logits)
    w_proj           d -> H   (CARVE)    d H          (one write scalar per head)
                     d -> H*V (GDN-2)    d H V        (vector write gate)
    U_down, U_up     [H,r,V], [H,K,r]    H r (V + K)  (CARVE with content "self" only)
    out gate         d -> R -> H*V       d R + R H V
    o_norm           [V]                 V            (RMSNorm per head, weight shared by heads)
    o_proj           H*V -> d            H V d

Attention layer with ``H`` query heads, ``G`` key/value heads, head dim ``D``:
``d H D`` (q) + ``2 d G D`` (k, v) + ``H D d`` (o).
"""

from __future__ import annotations


def _recurrent(b: dict, d: int, write: int) -> dict[str, int]:
    H, K, V, R, c = b["heads"], b["head_dim"], b["value_dim"], b["gate_rank"], b["conv_size"]
    return {
        "qkv_proj": d * (2 * H * K + H * V),
        "short_conv": c * (2 * H * K + H * V),
        "decay": d * R + R * H * K + H + H * K,
        "erase_proj": d * H * K,
        "write_proj": d * write,
        "content": H * b["content_rank"] * (V + K) if b.get("content", "off") == "self" else 0,
        "out_gate": d * R + R * H * V,
        "out_norm": V,
        "o_proj": H * V * d,
    }


def carve_mixer_params(b: dict, d: int) -> dict[str, int]:
    """Per-tensor-group counts of a normalised CARVE block (without its pre-norm): one write scalar
    per head, content projections when ``content`` is ``self``."""
    return _recurrent(b, d, write=b["heads"])


def gdn2_mixer_params(b: dict, d: int) -> dict[str, int]:
    """Per-tensor-group counts of a normalised GDN-2 block (without its pre-norm): a vector write gate."""
    return _recurrent(b, d, write=b["heads"] * b["value_dim"])


def attention_mixer_params(b: dict, d: int) -> dict[str, int]:
    """Per-tensor-group counts of a normalised attention block (without its pre-norm)."""
    H, G, D = b["heads"], b["kv_heads"], b["head_dim"]
    return {"q_proj": d * H * D, "kv_proj": 2 * d * G * D, "o_proj": H * D * d}
