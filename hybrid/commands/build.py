"""``hybrid build RECIPE``: validate a recipe, build its model, report predicted vs measured costs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from hybrid.commands._mixed_args import reparse_mixed

NAME = "build"
HELP = "check a recipe, build its model, and report analytic predictions next to measured costs"
DESCRIPTION = """Check a recipe completely (nothing is allocated when it is wrong), build the model, and print
a report: analytic predictions (docs/analytic.md) next to measurements of the same quantities, with
the relative error (predicted - measured) / measured per row.

Predicted: parameters, training FLOPs per token, activation memory per token, decode FLOPs per token,
KV cache + recurrent state at several context lengths, a roofline step time from the device's rates
(a table of measured devices, else measured on the spot: the floor), a calibrated step time and peak
memory when `hybrid calibrate` has timed this recipe's parts on this device (else one line says how),
an analytic peak memory of a training step, crossover
lengths against a pure transformer of the same width and depth, and a recall-capacity proxy.
Measured: the exact parameter count, FLOPs counted by torch, a timed forward+backward step at the
recipe's batch and length (bf16 autocast on CUDA), the peak CUDA memory of that step, and the cache
bytes after a prefill. On CPU the peak memory is not measured (the report says so).

examples:
  hybrid build recipes/tiny-cpu.yaml --print-layout       layout and legend only; builds nothing
  hybrid build recipes/tiny-cpu.yaml                      full report on this machine
  hybrid build recipes/carve-3to1.yaml --no-measure       predictions only (no model is built)
  hybrid build recipes/carve-350m-3to1.yaml --device cuda --length 4096 --batch 8 --json --out runs/report
  hybrid build recipes/tiny-cpu.yaml layout.ratio=1:1 model.n_layers=8    with overrides
"""


def _options(p) -> None:
    p.add_argument("--print-layout", action="store_true",
                   help="print the expanded layout (one block per layer) and a legend, then stop")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.add_argument("--out", default=None, help="also write report.json into this folder")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default: train.batch_size)")
    p.add_argument("--length", type=int, default=None, help="tokens per sequence (default: train.seq_len)")
    p.add_argument("--no-measure", action="store_true", help="predictions only; do not build or run the model")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="skip the timed step when the roofline suggests it would take longer (default 120)")
    p.add_argument("--tokens-per-fact", type=int, default=8, help="context tokens one fact takes (capacity proxy)")
    p.add_argument("--cache-dir", default=None,
                   help="folder of the calibration tables of `hybrid calibrate` (default $XDG_CACHE_HOME/hybrid)")


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="recipe overrides, e.g. layout.ratio=1:1 model.n_layers=8 (options may be mixed in)")
    _options(p)


def main(args) -> int:
    from hybrid.recipes import RecipeError, load_recipe

    reparse_mixed(args, "hybrid build", _options)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: {bad[0]!r} is not an override KEY=VALUE (e.g. layout.ratio=1:1)", file=sys.stderr)
        return 2
    try:
        recipe = load_recipe(args.recipe, overrides=args.overrides)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_layout:
        if args.json:
            print(json.dumps({"name": recipe.name, "layout": recipe.layer_names, "layers": recipe.layers}, indent=2))
        else:
            print(recipe.layout_text())
        return 0

    import torch

    from hybrid.analytic.report import build_report, render

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available here", file=sys.stderr)
        return 2
    for flag in ("batch", "length"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            print(f"error: --{flag} must be >= 1", file=sys.stderr)
            return 2

    def log(msg):
        print(msg, file=sys.stderr)

    report = build_report(recipe, device=device, batch=args.batch, length=args.length,
                          measure=not args.no_measure, max_seconds=args.max_seconds,
                          tokens_per_fact=args.tokens_per_fact, calibration_dir=args.cache_dir, log=log)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "report.json")
        with open(path, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        render(report)
    return 0
