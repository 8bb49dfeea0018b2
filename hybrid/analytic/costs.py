"""Analytic costs of a hybrid model, from its block dicts alone (no module is built).

Each block kind's per-layer formulas live with the kind (``hybrid.blocks.mixer_costs``, registered in
``hybrid.blocks.spec``); this module sums them over a model. Every formula is derived in docs/analytic.md. Conventions: one multiply-add = 2 FLOPs; "per token"
means averaged over the tokens of a causal sequence of length N (training) or at context T (decode);
``b`` is bytes per activation element (2 for bf16 autocast, 4 for fp32), ``b_s`` = 4 (fp32 states).

Parameter counts come from ``hybrid.blocks.params`` (the model engineer's exact formulas).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid.blocks.mixer_costs import ATTN_BWD_FACTOR, REC_BWD_FACTOR, STATE_BYTES, mean_context
from hybrid.blocks.params import count_params, mixer_params
from hybrid.blocks.spec import block_kind, is_recurrent, normalize_mlp

__all__ = ["ATTN_BWD_FACTOR", "REC_BWD_FACTOR", "STATE_BYTES", "ModelCosts", "cache_bytes", "core_decode_flops",
           "core_fwd_flops", "core_train_flops", "matmul_params", "mean_context", "pure_transformer_config",
           "saved_bytes_per_token"]


# --------------------------------------------------------------------------------------------------
# per-layer quantities: each block kind's own cost functions (registered in hybrid.blocks.spec)


def matmul_params(block: dict, d: int) -> float:
    """Weights applied once per token (2 FLOPs each forward); per-chunk content weights amortised."""
    return block_kind(block).costs.matmul_params(block, d, mixer_params(block, d))


def core_fwd_flops(block: dict, n: int) -> float:
    """Sequence-mixing FLOPs per token, forward, at training length n (no projections)."""
    return block_kind(block).costs.core_fwd_flops(block, n)


def core_train_flops(block: dict, n: int) -> float:
    costs = block_kind(block).costs
    return costs.core_fwd_flops(block, n) * (1 + costs.bwd_factor)


def core_decode_flops(block: dict, t: int) -> float:
    """Sequence-mixing FLOPs for one new token at context t."""
    return block_kind(block).costs.core_decode_flops(block, t)


def cache_bytes(block: dict, t: int, b: int) -> dict:
    """Decode-time memory of one layer for one sequence after t tokens: the core term and bookkeeping."""
    return block_kind(block).costs.cache_bytes(block, t, b)


def saved_bytes_per_token(block: dict, d: int, b: int) -> float:
    """Activations a training step keeps for the backward pass, per token, for one mixer + its norm."""
    return block_kind(block).costs.saved_bytes_per_token(block, d, b, mixer_params(block, d))


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
