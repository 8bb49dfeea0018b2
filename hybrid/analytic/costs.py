"""Analytic costs of a hybrid model, from its block dicts alone (no module is built).

Every formula is derived in docs/analytic.md. Conventions: one multiply-add = 2 FLOPs; "per token"
means averaged over the tokens of a causal sequence of length N (training) or at context T (decode);
``b`` is bytes per activation element (2 for bf16 autocast, 4 for fp32), ``b_s`` = 4 (fp32 states).

Parameter counts come from ``hybrid.blocks.params`` (the model engineer's exact formulas).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid.blocks.params import attention_mixer_params, count_params, recurrent_mixer_params
from hybrid.blocks.spec import is_recurrent, normalize_mlp

STATE_BYTES = 4  # recurrent state and chunk accumulators are fp32
ATTN_BWD_FACTOR = 2.5  # FlashAttention backward: 5 matmuls (with recompute) vs 2 in the forward
REC_BWD_FACTOR = 2.0  # chunked delta rule backward: recompute + gradient passes ~ 2x the forward


# --------------------------------------------------------------------------------------------------
# per-layer quantities


def mean_context(n: int, window: int | None) -> float:
    """Mean number of keys a query sees in a causal sequence of length n (window W or full)."""
    if window is None or window >= n:
        return (n + 1) / 2
    w = window
    return (w * (w + 1) / 2 + (n - w) * w) / n


def matmul_params(block: dict, d: int) -> float:
    """Weights applied once per token (2 FLOPs each forward); per-chunk content weights amortised."""
    if is_recurrent(block):
        p = recurrent_mixer_params(block, d)
        per_token = (p["qkv_proj"] + p["short_conv"] + p["decay"] - block["heads"] * (1 + block["head_dim"])
                     + p["erase_proj"] + p["write_proj"] + p["out_gate"] + p["o_proj"])
        return per_token + p.get("content", 0) / block["chunk_size"]
    return float(sum(attention_mixer_params(block, d).values()))


def core_fwd_flops(block: dict, n: int) -> float:
    """Sequence-mixing FLOPs per token, forward, at training length n (no projections)."""
    if is_recurrent(block):
        H, K, V = block["heads"], block["head_dim"], block["value_dim"]
        C = min(block["chunk_size"], n)
        return H * (6 * K * V + C * (6 * K + 4 * V) + C * C / 3)
    return 4 * block["heads"] * block["head_dim"] * mean_context(n, block["window"])


def core_train_flops(block: dict, n: int) -> float:
    f = core_fwd_flops(block, n)
    return f * (1 + (REC_BWD_FACTOR if is_recurrent(block) else ATTN_BWD_FACTOR))


def core_decode_flops(block: dict, t: int) -> float:
    """Sequence-mixing FLOPs for one new token at context t."""
    if is_recurrent(block):
        H, K, V = block["heads"], block["head_dim"], block["value_dim"]
        return 7 * H * K * V
    ctx = t if block["window"] is None else min(t, block["window"])
    return 4 * block["heads"] * block["head_dim"] * ctx


def cache_bytes(block: dict, t: int, b: int) -> dict:
    """Decode-time memory of one layer for one sequence after t tokens: the core term and bookkeeping."""
    if is_recurrent(block):
        H, K, V, c = block["heads"], block["head_dim"], block["value_dim"], block["conv_size"]
        core = H * K * V * STATE_BYTES
        extra = (c - 1) * (2 * H * K + H * V) * b + 2 * H * V * STATE_BYTES + 8  # conv, m_prev/o_sum, pos
        return {"core": core, "extra": extra}
    ctx = t if block["window"] is None else min(t, block["window"])
    core = 2 * ctx * block["kv_heads"] * block["head_dim"] * b
    return {"core": core, "extra": ctx * (8 + 1)}  # int64 RoPE position + bool validity per cached slot


def saved_bytes_per_token(block: dict, d: int, b: int) -> float:
    """Activations a training step keeps for the backward pass, per token, for one mixer + its norm."""
    if is_recurrent(block):
        H, K, V, R = block["heads"], block["head_dim"], block["value_dim"], block["gate_rank"]
        C = block["chunk_size"]
        width = 2 * H * K + H * V
        wgate = H if block["kind"] == "carve" else H * V
        act = 2 * d + 3 * width + 2 * H * K + 2 * R + H * K + wgate + 4 * H * V
        fp32 = 4 * H * K + 2 * H * K  # fp32 copies for the L2 norm, the decay pre-activation and g
        return act * b + fp32 * 4 + H * K * V * STATE_BYTES / C
    Hq, G, D = block["heads"], block["kv_heads"], block["head_dim"]
    act = 2 * d + (Hq + 2 * G) * D + (Hq + G) * D + Hq * D
    return act * b + (Hq + G) * D * 4 + Hq * 4  # fp32 RoPE temporaries, logsumexp


def mlp_saved_bytes_per_token(mlp: dict, d: int, b: int) -> float:
    if mlp["kind"] == "none":
        return 0.0
    return (2 * d + 4 * mlp["hidden"]) * b


# --------------------------------------------------------------------------------------------------
# whole model


@dataclass
class ModelCosts:
    """Analytic costs of a model given as HybridConfig keyword arguments (``Recipe.model_config_kwargs``)."""

    cfg: dict

    @property
    def d(self) -> int:
        return self.cfg["d_model"]

    @property
    def layers(self) -> list[dict]:
        return self.cfg["layers"]

    @property
    def mlp(self) -> dict:
        return normalize_mlp(self.cfg.get("mlp"), self.d)

    @property
    def vocab(self) -> int:
        return self.cfg["vocab_size"]

    def params(self) -> dict:
        return count_params(self.cfg)

    def n_attention(self) -> int:
        return sum(1 for b in self.layers if not is_recurrent(b))

    def forward_matmul_flops(self) -> float:
        """Projection + MLP + output-head FLOPs per token, forward (context independent)."""
        mlp_w = 0 if self.mlp["kind"] == "none" else 3 * self.d * self.mlp["hidden"]
        per_layer = sum(matmul_params(b, self.d) + mlp_w for b in self.layers)
        return 2 * (per_layer + self.d * self.vocab)

    def train_flops_per_token(self, n: int) -> dict:
        mm = 3 * self.forward_matmul_flops()
        att = sum(core_train_flops(b, n) for b in self.layers if not is_recurrent(b))
        rec = sum(core_train_flops(b, n) for b in self.layers if is_recurrent(b))
        return {"total": mm + att + rec, "matmul": mm, "attention_core": att, "recurrent_core": rec}

    def decode_flops_per_token(self, t: int) -> float:
        return self.forward_matmul_flops() + sum(core_decode_flops(b, t) for b in self.layers)

    def cache_bytes(self, t: int, b: int, batch: int = 1) -> dict:
        core = extra = 0
        for blk in self.layers:
            c = cache_bytes(blk, t, b)
            core += c["core"]
            extra += c["extra"]
        return {"total": batch * (core + extra), "core": batch * core, "bookkeeping": batch * extra}

    def activation_bytes_per_token(self, b: int) -> float:
        per = sum(saved_bytes_per_token(blk, self.d, b) + mlp_saved_bytes_per_token(self.mlp, self.d, b)
                  for blk in self.layers)
        return per + 2 * self.d * b  # final norm in/out

    def logits_bytes_per_token(self, b: int) -> float:
        """Logits in the compute dtype, their fp32 copy for the loss, and the fp32 gradient."""
        return self.vocab * (b + 4 + 4)

    def train_peak_bytes(self, batch: int, n: int, b: int) -> dict:
        """Peak memory of one forward+backward step (no optimizer state), weights and grads fp32."""
        p = self.params()["total"]
        weights = 4 * p
        grads = 4 * p
        casts = 2 * p if b == 2 else 0  # autocast keeps a bf16 copy of every weight during the step
        acts = batch * n * self.activation_bytes_per_token(b)
        logits = batch * n * self.logits_bytes_per_token(b)
        total = weights + grads + casts + acts + logits
        return {"total": total, "weights": weights, "grads": grads, "autocast_copies": casts,
                "activations": acts, "logits": logits}


def pure_transformer_config(cfg: dict, attention: dict | None = None) -> dict:
    """The same width/depth with every layer full attention (the recipe's first attention template with
    ``window: null``, or heads = d/64 of width 64 when the recipe has none)."""
    from hybrid.blocks.spec import normalize_block

    if attention is None:
        atts = [b for b in cfg["layers"] if not is_recurrent(b)]
        if atts:
            attention = dict(atts[0], window=None)
        else:
            attention = {"kind": "attention", "heads": max(1, cfg["d_model"] // 64), "head_dim": 64}
    blk = normalize_block(attention)
    out = dict(cfg)
    out["layers"] = [dict(blk) for _ in cfg["layers"]]
    return out
