"""``hybrid frontier RECIPE``: the predicted cost / recall-capacity frontier over attention fractions."""

from __future__ import annotations

import json
import os
import sys

NAME = "frontier"
HELP = "predict the cost vs recall-capacity Pareto frontier over attention fractions (table + PNG)"
DESCRIPTION = """Re-lay out a recipe at several attention fractions f (layout.ratio = (1-f):f, same block
templates and placement), predict each variant's cost and its recall capacity (docs/analytic.md), and
show the Pareto frontier as a table and a plot. With --cost step-time the step time is the one
calibrated on this device by `hybrid calibrate` (the roofline beside it as the floor), or the roofline
alone with one line saying how to calibrate. With --facts F the predicted optimum is marked: the
cheapest fraction whose capacity is at least F facts. Nothing is built or trained; compare the
prediction with a measured RULER ratio sweep (recipes/sweep-ratios.yaml).

Capacity proxy: attention covering the context reads all length/tokens-per-fact facts; a recurrent
layer holds about heads x head_dim associations; a sliding window adds the facts of its last W tokens.

examples:
  hybrid frontier recipes/carve-3to1.yaml --ratios 0,1/8,1/4,1/2,1 --length 8192 --facts 600
  hybrid frontier recipes/carve-3to1.yaml --ratios 1:0,7:1,3:1,1:1,0:1 --cost cache-memory --length 131072
"""


def add_arguments(p) -> None:
    from hybrid.analytic.frontier import COSTS

    p.add_argument("recipe", help="recipe YAML file (its templates and placement are reused)")
    p.add_argument("--ratios", default="0,1/8,1/4,1/2,1",
                   help="attention fractions (0,1/8,0.25,1) or recurrent:attention ratios (7:1,3:1)")
    p.add_argument("--length", type=int, default=None, help="context length (default: train.seq_len)")
    p.add_argument("--facts", type=float, default=None, help="recall demand: facts the model must retrieve")
    p.add_argument("--tokens-per-fact", type=int, default=8, help="context tokens one fact takes (default 8)")
    p.add_argument("--cost", default="train-flops", choices=list(COSTS), help="cost axis (default train-flops)")
    p.add_argument("--batch", type=int, default=1, help="batch for --cost step-time")
    p.add_argument("--device", default="H200",
                   help="--cost step-time on: H200 (roofline from its table; calibrated when this machine is "
                        "an H200), cpu or cuda (roofline rates measured now; calibrated by `hybrid calibrate`)")
    p.add_argument("--cache-dir", default=None,
                   help="folder of the calibration tables of `hybrid calibrate` (default $XDG_CACHE_HOME/hybrid)")
    p.add_argument("--dtype-bytes", type=int, default=2, choices=(2, 4), help="bytes per activation (2 = bf16)")
    p.add_argument("--out", default=None, help="folder for frontier.png and frontier.json "
                                               "(default runs/frontier-RECIPE)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def main(args) -> int:
    from hybrid.analytic.frontier import frontier, parse_fractions, plot
    from hybrid.analytic.report import fmt
    from hybrid.recipes import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
        fractions = parse_fractions(args.ratios)
    except (RecipeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    length = args.length or int(recipe.train.get("seq_len", 2048))
    if length < 1 or args.tokens_per_fact < 1:
        print("error: --length and --tokens-per-fact must be >= 1", file=sys.stderr)
        return 2
    rates = table = note = None
    if args.cost == "step-time":
        from hybrid.analytic.rates import KNOWN, rates_for

        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                print("error: --device cuda but no CUDA device is available here", file=sys.stderr)
                return 2
        try:
            rates = KNOWN.get(args.device) or rates_for(args.device)
        except RuntimeError as e:
            print(f"error: --device {args.device}: {e}", file=sys.stderr)
            return 2
        table, note = _calibration(recipe, fractions, args)
    try:
        res = frontier(recipe, fractions, length, facts=args.facts, tokens_per_fact=args.tokens_per_fact,
                       cost=args.cost, batch=args.batch, b=args.dtype_bytes, rates=rates, table=table)
    except RecipeError as e:
        print(f"error: cannot re-lay out the recipe: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", f"frontier-{recipe.name}")
    os.makedirs(out, exist_ok=True)
    png = plot(res, os.path.join(out, "frontier.png"))
    with open(os.path.join(out, "frontier.json"), "w") as fh:
        json.dump(res, fh, indent=2)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{recipe.name}: predicted frontier at {length:,} tokens ({res['cost_label']})")
    floor = table is not None
    cols = ["fraction", "ratio", "attention layers", "layout", res["cost_label"]]
    cols += ["roofline (floor)"] if floor else []
    for col in cols + ["capacity (facts)", "on frontier"]:
        t.add_column(col, justify="left" if col == "layout" else "right")
    for p in res["points"]:
        mark = " *" if p["ratio"] == res["optimum"] else ""
        extra = [fmt(p["costs"]["step-time-roofline"], "s")] if floor else []
        t.add_row(p["fraction"], p["ratio"] + mark, f"{p['n_attention']}/{p['n_layers']}", p["layout"],
                  fmt(p["cost"], res["cost_unit"]), *extra, f"{p['capacity']:,.0f}", "yes" if p["pareto"] else "")
    console = Console()
    console.print(t)
    if note:
        console.print(f"[yellow]calibration:[/yellow] {note}")
    elif res["calibrated_on"]:
        console.print(f"step time calibrated on {res['calibrated_on']}; the roofline beside it is the floor")
    console.print(f"facts in context: {res['facts_in_context']:,.0f} ({args.tokens_per_fact} tokens per fact)")
    if args.facts is not None:
        if res["optimum"]:
            console.print(f"predicted optimum for {args.facts:g} facts: ratio {res['optimum']} (marked *)")
        else:
            console.print(f"[yellow]no fraction reaches {args.facts:g} facts at this length[/yellow]")
    console.print(f"wrote {png} and {os.path.join(out, 'frontier.json')}")
    return 0


def _calibration(recipe, fractions, args):
    """(table, None) when this machine's calibration covers every variant, else (None, one line)."""
    from hybrid.analytic.calibration import cache_dir, hint, load_table, software_key
    from hybrid.analytic.frontier import calibrated_for
    from hybrid.analytic.rates import KNOWN

    folder = cache_dir(args.cache_dir)
    device = args.device
    if device in KNOWN:
        import torch

        if not (torch.cuda.is_available() and device in torch.cuda.get_device_name()):
            return None, (f"step time from the {device} roofline only; a calibrated one needs "
                          f"`hybrid calibrate {recipe.path}` run on an {device}")
        device = "cuda"
    table = load_table(software_key(device), folder)
    if table is None or not calibrated_for(recipe, fractions, table):
        return None, hint(recipe.path, device, folder)
    return table, None
