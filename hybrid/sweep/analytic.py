"""The analytic model's predictions for one sweep variant (``hybrid.analytic``), next to what is measured."""

from __future__ import annotations

from hybrid.analytic.costs import ModelCosts
from hybrid.train.config import TrainConfig


def predictions(recipe, lengths: list[int], bytes_per_el: int = 2) -> dict:
    """Parameters, training FLOPs/token at the training length, and per evaluation length the decode
    FLOPs/token and the cache bytes (recurrent state + KV cache, batch 1)."""
    mc = ModelCosts(recipe.model_config_kwargs())
    n = TrainConfig.from_dict(recipe.train).seq_len
    out = {
        "params": mc.params()["total"],
        "attention_layers": mc.n_attention(),
        "train_flops_per_token": mc.train_flops_per_token(n)["total"],
        "by_length": {},
    }
    for t in lengths:
        cache = mc.cache_bytes(t, bytes_per_el)
        out["by_length"][str(t)] = {"decode_flops_per_token": mc.decode_flops_per_token(t),
                                    "cache_bytes": cache["total"], "cache_core_bytes": cache["core"]}
    return out
