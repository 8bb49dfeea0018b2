"""``hybrid calibrate RECIPE...``: time each step part of recipes on this device and cache the table."""

from __future__ import annotations

import json
import sys

NAME = "calibrate"
HELP = "time each block kind, the MLP, the norms, head and loss on this device for calibrated predictions"
DESCRIPTION = """Measure every part of a training step of the given recipes on this device: each mixer kind
with its pre-norm (carve, gdn2, attention, with the recipe's settings), the MLP with its norm, the
embedding, and the head (final norm, output projection and loss); forward and backward, at a grid of
sequence lengths T and tokens per step N = batch x T; with the memory each part keeps for its
backward. Also the optimizer step (gradient clipping + AdamW). The table is cached per device and
software version (torch, triton, hybrid) in $XDG_CACHE_HOME/hybrid (or ~/.cache/hybrid); parts
already measured at the same grid are kept. `hybrid build` and `hybrid frontier --cost step-time`
then predict a recipe's step time and peak memory from it, next to the roofline.

The block templates a frontier re-layout would use are calibrated too, so every attention fraction
of the recipe can be predicted.

examples:
  hybrid calibrate                                  every shipped recipe (recipes/*.yaml)
  hybrid calibrate recipes/carve-350m-3to1.yaml
  hybrid calibrate recipes/*.yaml --device cuda
  hybrid calibrate recipes/tiny-cpu.yaml --lengths 64,256 --tokens 1024,4096 --cache-dir /tmp/cal
"""


def _ints(text: str) -> tuple[int, ...]:
    import argparse

    try:
        vals = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def add_arguments(p) -> None:
    p.add_argument("recipes", nargs="*",
                   help="recipe YAML files whose parts to calibrate (default: every recipe shipped in recipes/; "
                        "sweep files are skipped)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--lengths", type=_ints, default=None,
                   help="sequence lengths T (default cuda 512,2048,8192,32768; cpu 64,256,1024)")
    p.add_argument("--tokens", type=_ints, default=None,
                   help="tokens per step N = batch x T (default cuda 2048,8192,32768; cpu 1024,4096)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per shape, median kept (default 3)")
    p.add_argument("--force", action="store_true", help="measure again parts already in the table")
    p.add_argument("--cache-dir", default=None, help="folder of the tables (default $XDG_CACHE_HOME/hybrid)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")


def shipped_recipes() -> list[str]:
    """The recipe files of the source tree (``recipes/*.yaml`` beside the package), sorted."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "recipes"
    return sorted(str(p) for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _recipe_signatures(recipe) -> list[dict]:
    from hybrid.analytic.frontier import _templates
    from hybrid.analytic.parts import mixer_signature, model_parts

    d = recipe.model["d_model"]
    sigs = model_parts(recipe.model_config_kwargs())
    blocks, rec, att = _templates(recipe)
    sigs += [mixer_signature(blocks[rec], d), mixer_signature(blocks[att], d)]
    return sigs


def main(args) -> int:
    from hybrid.recipes import RecipeError, is_sweep_file, load_recipe

    paths = args.recipes or shipped_recipes()
    if not paths:
        print("error: no recipe given and no shipped recipes/ folder found; name a recipe file", file=sys.stderr)
        return 2
    recipes = []
    for path in paths:
        try:
            if is_sweep_file(path):
                print(f"skipping {path}: a sweep file (calibrate the recipes it varies)", file=sys.stderr)
                continue
            recipes.append(load_recipe(path))
        except RecipeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if not recipes:
        print("error: no recipe to calibrate", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print("error: --repeats must be >= 1", file=sys.stderr)
        return 2

    import torch

    from hybrid.analytic.calibrate import calibrate
    from hybrid.analytic.calibration import cache_dir, empty_table, load_table, save_table, software_key
    from hybrid.analytic.parts import distinct

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available here", file=sys.stderr)
        return 2
    folder = cache_dir(args.cache_dir)
    key = software_key(device)
    table = load_table(key, folder) or empty_table(key)
    sigs = distinct(s for r in recipes for s in _recipe_signatures(r))

    def log(msg):
        print(msg, file=sys.stderr)

    log(f"device: {key['device']} ({key['precision']}), torch {key['torch']}, triton {key['triton']}, "
        f"hybrid {key['hybrid']}")
    try:
        done = calibrate(table, sigs, device, lengths=args.lengths, tokens=args.tokens, repeats=args.repeats,
                         force=args.force, log=log, on_part=lambda t: save_table(t, folder))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = save_table(table, folder)
    if args.json:
        print(json.dumps(table.data, indent=1))
        return 0
    _render(table, sigs, done, path)
    return 0


def _render(table, sigs, done, path) -> None:
    from rich.console import Console
    from rich.table import Table

    from hybrid.analytic.parts import describe, signature_key
    from hybrid.analytic.report import fmt

    t = Table(title=f"calibration on {table.key['device']} ({table.key['precision']})")
    for col in ("part", "batch x T", "forward", "backward", "saved / token"):
        t.add_column(col, justify="left" if col == "part" else "right")
    for s in sigs:
        e = table.parts[signature_key(s)]
        for c in e["cells"]:
            t.add_row(describe(s), f"{c['batch']} x {c['length']}", fmt(c["forward_s"], "s"),
                      fmt(c["backward_s"], "s"), fmt(c["saved_bytes"] / c["tokens"], "B"))
        for c in e["skipped"]:
            t.add_row(describe(s), f"{c['batch']} x {c['length']}", "-", "-", c["why"])
    console = Console()
    console.print(t)
    o = table.data.get("optimizer")
    if o:
        console.print(f"optimizer step (clip + AdamW): {fmt(o['fixed_s'], 's')} + "
                      f"{o['seconds_per_param'] * 1e9:.3g} ns per parameter")
    console.print(f"measured {len(done['measured'])} parts, kept {len(done['kept'])}; wrote {path}")
