"""Comparisons against a pure transformer of the same width and depth, and the recall-capacity proxy.

Crossover length: the smallest context at which the hybrid's cost drops to the transformer's or below
(found by bisection; each cost difference is non-increasing in the length for these cost forms).
Recall-capacity proxy (docs/analytic.md): facts a model can look up at context T, with one fact
taking ``tokens_per_fact`` tokens of context:

- an attention layer whose window covers the context reads every fact in it: T / tokens_per_fact;
- a recurrent layer stores at most about H * K key->value associations (one per orthogonal key
  direction per head); layers are not added up, since a lookup is answered by one layer's state;
- a sliding-window layer reads the facts of its last W tokens; older facts must come from a state.
"""

from __future__ import annotations

from hybrid.analytic.costs import ModelCosts, pure_transformer_config
from hybrid.blocks.spec import is_recurrent

MAX_LENGTH = 1 << 24


def crossover(f_hybrid, f_ref, lo: int = 1, hi: int = MAX_LENGTH):
    """Smallest integer x in [lo, hi] with f_hybrid(x) <= f_ref(x): an int, 'always' (at lo) or None."""
    if f_hybrid(lo) <= f_ref(lo):
        return "always"
    if f_hybrid(hi) > f_ref(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if f_hybrid(mid) <= f_ref(mid):
            hi = mid
        else:
            lo = mid
    return hi


def crossovers(cfg: dict, b: int) -> dict:
    """Whole-model crossover lengths of the hybrid vs the pure transformer of the same width/depth."""
    hyb = ModelCosts(cfg)
    ref = ModelCosts(pure_transformer_config(cfg))
    return {
        "cache_memory": crossover(lambda t: hyb.cache_bytes(t, b)["total"], lambda t: ref.cache_bytes(t, b)["total"]),
        "decode_flops": crossover(hyb.decode_flops_per_token, ref.decode_flops_per_token),
        "train_flops": crossover(lambda n: hyb.train_flops_per_token(n)["total"],
                                 lambda n: ref.train_flops_per_token(n)["total"]),
        "reference": "pure transformer: every layer " + _describe(ref.layers[0]),
    }


def _describe(block: dict) -> str:
    return f"attention heads={block['heads']} kv_heads={block['kv_heads']} head_dim={block['head_dim']}"


def per_layer_crossovers(rec: dict, att: dict, b: int) -> dict:
    """The closed forms for one recurrent layer vs one full-attention layer (docs/analytic.md)."""
    H, K, V = rec["heads"], rec["head_dim"], rec["value_dim"]
    return {
        "T_mem": H * K * V * 4 / (2 * att["kv_heads"] * att["head_dim"] * b),
        "T_flop": 7 * H * K * V / (4 * att["heads"] * att["head_dim"]),
    }


def recall_capacity(layers: list[dict], t: int, tokens_per_fact: int = 8) -> float:
    """Facts retrievable at context t (the proxy above). Never more than the facts in the context."""
    in_context = t / tokens_per_fact
    best_state = max((b["heads"] * b["head_dim"] for b in layers if is_recurrent(b)), default=0)
    best = float(min(best_state, in_context))
    for b in layers:
        if is_recurrent(b):
            continue
        w = b["window"]
        if w is None or w >= t:
            return in_context
        best = max(best, min(in_context, w / tokens_per_fact + best_state))
    return best
