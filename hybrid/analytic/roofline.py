"""Predicted training-step time: a roofline summed over the parts of one forward+backward step.

Each part i has FLOPs F_i and bytes moved B_i; its time is max(F_i / P, B_i / BW) with the device's
matmul rate P and copy bandwidth BW (hybrid.analytic.rates). The sum is a lower bound: it assumes
every kernel reaches the matmul rate or the copy rate, whichever binds. docs/analytic.md derives the
byte counts.
"""

from __future__ import annotations

from hybrid.analytic.costs import STATE_BYTES, ModelCosts, core_train_flops
from hybrid.analytic.rates import DeviceRates
from hybrid.blocks.spec import is_recurrent


def step_parts(costs: ModelCosts, batch: int, n: int, b: int) -> list[dict]:
    tokens = batch * n
    p = costs.params()["total"]
    parts = [{
        "part": "projections + MLP + head (matmul)",
        "flops": 3 * costs.forward_matmul_flops() * tokens,
        # weights read in fwd and twice in bwd (+ the cast copy), gradients written in fp32
        "bytes": p * (3 * b + 4 + (4 if b == 2 else 0)),
    }]
    att_f = att_b = rec_f = rec_b = 0.0
    for blk in costs.layers:
        f = core_train_flops(blk, n) * tokens
        if is_recurrent(blk):
            H, K, V, C = blk["heads"], blk["head_dim"], blk["value_dim"], blk["chunk_size"]
            io = (2 * H * K + H * V + H * K + H * V) * b + H * K * 4 + H * K * V * STATE_BYTES / C
            rec_f += f
            rec_b += 3 * io * tokens  # read inputs / write outputs in fwd, again twice in bwd
        else:
            Hq, G, D = blk["heads"], blk["kv_heads"], blk["head_dim"]
            io = (2 * Hq + 2 * G) * D * b
            att_f += f
            att_b += 3.5 * io * tokens
    if att_f:
        parts.append({"part": "attention core", "flops": att_f, "bytes": att_b})
    if rec_f:
        parts.append({"part": "recurrent core (chunked delta rule)", "flops": rec_f, "bytes": rec_b})
    parts.append({
        "part": "elementwise (norms, gates, conv, activations, loss)",
        "flops": 0.0,
        # saved activations are written in fwd, read in bwd, and their gradients written once;
        # logits: written, upcast, softmax, gradient
        "bytes": tokens * (3 * costs.activation_bytes_per_token(b) + 2 * costs.logits_bytes_per_token(b)),
    })
    return parts


def predict_step_time(costs: ModelCosts, batch: int, n: int, b: int, rates: DeviceRates) -> dict:
    parts = step_parts(costs, batch, n, b)
    total = 0.0
    for q in parts:
        tc = q["flops"] / rates.matmul_flops
        tm = q["bytes"] / rates.bandwidth
        q["seconds"] = max(tc, tm)
        q["bound"] = "compute" if tc >= tm else "memory"
        total += q["seconds"]
    return {"seconds": total, "parts": parts, "rates": rates.to_dict()}
