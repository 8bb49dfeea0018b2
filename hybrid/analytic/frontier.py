"""The predicted Pareto frontier of cost vs recall capacity over attention fractions.

For each attention fraction f the recipe is re-laid out with ``layout.ratio = (1-f):f`` (same
templates, same placement), its cost is predicted (hybrid.analytic.costs) and its recall capacity
estimated (hybrid.analytic.compare.recall_capacity). A point is on the frontier when no other point
is at least as cheap and at least as capable, and strictly better in one. The predicted optimum for a
recall demand of F facts is the cheapest point whose capacity is >= F.
"""

from __future__ import annotations

from fractions import Fraction

from hybrid.analytic.compare import recall_capacity
from hybrid.analytic.costs import ModelCosts
from hybrid.blocks.spec import is_recurrent
from hybrid.recipes import recipe_from_dict
from hybrid.recipes.layout import parse_ratio

COSTS = {
    "train-flops": ("training FLOPs / token", "FLOP"),
    "decode-flops": ("decode FLOPs / token", "FLOP"),
    "cache-memory": ("KV cache + state per sequence", "B"),
    "step-time": ("roofline train-step time", "s"),
}


def parse_fractions(text: str) -> list[Fraction]:
    """'0,1/8,1/4,1/2,1' or '1:0,7:1,3:1' (recurrent:attention) -> attention fractions."""
    out = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if ":" in item:
            r, a = parse_ratio(item)
            f = Fraction(a, r + a)
        else:
            try:
                f = Fraction(item)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"not an attention fraction: {item!r} (use e.g. 0, 1/8, 0.25 or 3:1)") from None
        if not 0 <= f <= 1:
            raise ValueError(f"an attention fraction must be in [0, 1], got {item!r}")
        out.append(f)
    if not out:
        raise ValueError("no fractions given")
    return sorted(set(out))


def ratio_text(f: Fraction) -> str:
    return f"{f.denominator - f.numerator}:{f.numerator}"


def _templates(recipe) -> tuple[dict, str, str]:
    """Blocks plus the recurrent and attention template names to use (adding defaults when missing)."""
    blocks = {k: dict(v) for k, v in recipe.blocks.items()}
    used = list(dict.fromkeys(recipe.layer_names)) + list(blocks)
    rec = next((n for n in used if is_recurrent(blocks[n])), None)
    att = next((n for n in used if not is_recurrent(blocks[n])), None)
    d = recipe.model["d_model"]
    if att is None:
        att = "attn" if "attn" not in blocks else "attn_default"
        blocks[att] = {"kind": "attention", "heads": max(1, d // 64), "head_dim": 64}
    if rec is None:
        rec = "carve" if "carve" not in blocks else "carve_default"
        blocks[rec] = {"kind": "carve", "heads": max(1, d // 128), "head_dim": 128}
    return blocks, rec, att


def variant(recipe, f: Fraction):
    blocks, rec, att = _templates(recipe)
    placement = recipe.source.get("layout", {}).get("placement", "spread")
    data = {"name": f"{recipe.name}-f{f.numerator}over{f.denominator}", "model": dict(recipe.model),
            "blocks": blocks,
            "layout": {"ratio": ratio_text(f), "placement": placement, "recurrent": rec, "attention": att}}
    return recipe_from_dict(data, recipe.path)


def calibrated_for(recipe, fractions, table) -> bool:
    """Whether ``table`` (hybrid.analytic.calibration.Table) holds every part of every variant."""
    from hybrid.analytic.parts import model_parts

    return not any(table.missing(model_parts(variant(recipe, f).model_config_kwargs())) for f in fractions)


def frontier(recipe, fractions, length: int, *, facts: float | None = None, tokens_per_fact: int = 8,
             cost: str = "train-flops", batch: int = 1, b: int = 2, rates=None, table=None) -> dict:
    """``rates`` gives the roofline step time; ``table`` (a calibration covering every variant, see
    ``calibrated_for``) makes the step-time cost the calibrated one, with the roofline kept beside it."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}")
    points = []
    for f in fractions:
        r = variant(recipe, f)
        cfg = r.model_config_kwargs()
        c = ModelCosts(cfg)
        values = {
            "train-flops": c.train_flops_per_token(length)["total"],
            "decode-flops": c.decode_flops_per_token(length),
            "cache-memory": c.cache_bytes(length, b)["total"],
        }
        if rates is not None:
            from hybrid.analytic.roofline import predict_step_time

            values["step-time"] = values["step-time-roofline"] = predict_step_time(c, batch, length, b,
                                                                                   rates)["seconds"]
        if table is not None:
            values["step-time"] = table.predict_step(cfg, batch, length)["seconds"]
        points.append({
            "fraction": str(f), "ratio": ratio_text(f), "layout": r.letters,
            "n_attention": c.n_attention(), "n_layers": len(cfg["layers"]),
            "params": c.params()["total"], "costs": values, "cost": values[cost],
            "capacity": recall_capacity(cfg["layers"], length, tokens_per_fact),
        })
    for p in points:
        p["pareto"] = not any(
            (q["cost"] <= p["cost"] and q["capacity"] >= p["capacity"])
            and (q["cost"] < p["cost"] or q["capacity"] > p["capacity"]) for q in points)
    optimum = None
    if facts is not None:
        ok = [p for p in points if p["capacity"] >= facts]
        if ok:
            optimum = min(ok, key=lambda p: (p["cost"], -p["capacity"]))["ratio"]
    label = COSTS[cost][0]
    if cost == "step-time" and table is not None:
        label = "calibrated train-step time"
    return {"recipe": recipe.name, "length": length, "cost_kind": cost, "cost_label": label,
            "calibrated_on": table.key["device"] if table is not None else None,
            "cost_unit": COSTS[cost][1], "facts": facts, "tokens_per_fact": tokens_per_fact,
            "facts_in_context": length / tokens_per_fact, "points": points, "optimum": optimum}


def plot(result: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [p["cost"] for p in pts]
    ys = [p["capacity"] for p in pts]
    ax.scatter(xs, ys, color="tab:gray", zorder=2, label="attention fraction")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["cost"])
    ax.plot([p["cost"] for p in front], [p["capacity"] for p in front], "-o", color="tab:blue", zorder=3,
            label="predicted Pareto frontier")
    for p in pts:
        ax.annotate(f"f={p['fraction']} ({p['ratio']})", (p["cost"], p["capacity"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    if result["facts"] is not None:
        ax.axhline(result["facts"], color="tab:red", ls="--", lw=1, label=f"recall demand: {result['facts']:g} facts")
    opt = next((p for p in pts if p["ratio"] == result["optimum"]), None)
    if opt is not None:
        ax.scatter([opt["cost"]], [opt["capacity"]], marker="*", s=300, color="tab:orange", zorder=4,
                   label=f"predicted optimum {opt['ratio']}")
    ax.set_xlabel(f"{result['cost_label']} ({result['cost_unit']}) at {result['length']:,} tokens")
    ax.set_ylabel("recall capacity proxy (facts)")
    if max(ys) > 20 * max(min(ys), 1e-9):
        ax.set_yscale("log")
    ax.set_title(f"{result['recipe']}: predicted cost vs recall capacity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
