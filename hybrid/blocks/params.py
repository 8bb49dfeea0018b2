"""Exact parameter counts from the block settings (no module is built).

The formulas mirror the modules in ``hybrid.blocks`` one tensor at a time; a test checks that they
equal ``sum(p.numel())`` of the built model for every block kind. The analytic cost model imports
these functions, so their signatures are stable:

- ``block_params(block, d_model)``: the mixer of one layer *plus its pre-norm* (d weights).
- ``mlp_params(mlp, d_model)``: the MLP of one layer *plus its pre-norm* (0 when the kind is none).
- ``count_params(config)``: the whole model, see its docstring.

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
``d H D`` (q) + ``2 d G D`` (k, v) + ``H D d`` (o). SwiGLU MLP with hidden ``F``: ``3 d F``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .spec import SpecError, normalize_block, normalize_mlp


def recurrent_mixer_params(b: dict, d: int) -> dict[str, int]:
    """Per-tensor-group counts of a normalised CARVE / GDN-2 block (without its pre-norm)."""
    H, K, V, R, c = b["heads"], b["head_dim"], b["value_dim"], b["gate_rank"], b["conv_size"]
    carve = b["kind"] == "carve"
    parts = {
        "qkv_proj": d * (2 * H * K + H * V),
        "short_conv": c * (2 * H * K + H * V),
        "decay": d * R + R * H * K + H + H * K,
        "erase_proj": d * H * K,
        "write_proj": d * H if carve else d * H * V,
        "content": H * b["content_rank"] * (V + K) if carve and b["content"] == "self" else 0,
        "out_gate": d * R + R * H * V,
        "out_norm": V,
        "o_proj": H * V * d,
    }
    return parts


def attention_mixer_params(b: dict, d: int) -> dict[str, int]:
    """Per-tensor-group counts of a normalised attention block (without its pre-norm)."""
    H, G, D = b["heads"], b["kv_heads"], b["head_dim"]
    return {"q_proj": d * H * D, "kv_proj": 2 * d * G * D, "o_proj": H * D * d}


def block_params(block: dict, d_model: int) -> int:
    """Parameters of one layer's mixer and its pre-norm RMSNorm (``d_model`` weights)."""
    b = normalize_block(block)
    _check_d(d_model)
    if b["kind"] in ("carve", "gdn2"):
        parts = recurrent_mixer_params(b, d_model)
    elif b["kind"] == "attention":
        parts = attention_mixer_params(b, d_model)
    else:  # a kind registered in spec.py without a formula here
        raise SpecError("kind", f"no parameter formula for block kind {b['kind']!r}")
    return sum(parts.values()) + d_model


def mlp_params(mlp: dict, d_model: int) -> int:
    """Parameters of one layer's MLP and its pre-norm (0 for ``kind: none``)."""
    _check_d(d_model)
    m = normalize_mlp(mlp, d_model)
    if m["kind"] == "none":
        return 0
    return 3 * d_model * m["hidden"] + d_model


def count_params(config) -> dict:
    """Exact parameter counts of a model, from its settings.

    ``config`` is a ``HybridConfig`` or a mapping with ``vocab_size``, ``d_model``, ``layers`` (block
    dicts), optional ``mlp`` and ``tie_embeddings`` (default True). Returns a dict:

    - ``embedding``: the input token table, ``vocab_size * d_model``;
    - ``lm_head``: the output projection, 0 when tied to the embedding;
    - ``final_norm``: ``d_model``;
    - ``per_layer``: list of ints, ``block_params + mlp_params`` of each layer;
    - ``non_embedding``: ``sum(per_layer) + final_norm`` (excludes the embedding and an untied head);
    - ``total``: every parameter, counted once (``embedding + lm_head + non_embedding``).
    """
    get = (lambda k, dflt=None: config.get(k, dflt)) if isinstance(config, Mapping) else \
        (lambda k, dflt=None: getattr(config, k, dflt))
    d, vocab, layers = get("d_model"), get("vocab_size"), get("layers")
    _check_d(d)
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 1:
        raise SpecError("model.vocab_size", f"expected a positive integer, got {vocab!r}")
    if not isinstance(layers, (list, tuple)) or not layers:
        raise SpecError("model.layers", f"expected a non-empty list of block dicts, got {layers!r}")
    mlp = get("mlp")
    tie = get("tie_embeddings", True)
    per_mlp = mlp_params(mlp, d)
    per_layer = [block_params(b, d) + per_mlp for b in layers]
    embedding = vocab * d
    lm_head = 0 if tie else vocab * d
    non_embedding = sum(per_layer) + d
    return {
        "total": embedding + lm_head + non_embedding,
        "embedding": embedding,
        "lm_head": lm_head,
        "final_norm": d,
        "non_embedding": non_embedding,
        "per_layer": per_layer,
    }


def _check_d(d_model) -> None:
    if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
        raise SpecError("model.d_model", f"expected a positive integer, got {d_model!r}")
