"""``hybrid train RECIPE``: train a recipe's model, with resumable checkpoints; DDP under torchrun."""

from __future__ import annotations

import argparse
import os
import sys

from hybrid.commands._mixed_args import reparse_mixed

NAME = "train"
HELP = "train a recipe's model (synthetic recall, RULER mixture or local text); resumable; torchrun for DDP"
DESCRIPTION = """Train the model a recipe describes, using the recipe's `train:` section.

Data (train.data.kind):
  text          local .txt / .jsonl ("text" field) files, tokenized and packed with document
                boundaries (default: the Shakespeare corpus and BPE tokenizer shipped with the package)
  assoc_recall  multi-query associative recall token sequences, fresh random draws every step
  ruler_mix     RULER-format task samples (prompt + answer), seeds disjoint from evaluation seeds

Output (--out, default runs/RECIPE_NAME): final weights + config + tokenizer at the top level
(HybridForCausalLM.from_pretrained(OUT) loads it), metrics.jsonl, loss_curve.png, summary.json,
checkpoints/ (atomic, checksummed; the newest train.keep_checkpoints are kept). Ctrl-C saves a
checkpoint and exits; --resume continues exactly where it stopped, from the newest checkpoint that
passes its checks (a damaged one is skipped and named). A resume must keep the train settings except
steps, eval/save/log cadence and the like (docs/training.md); --allow-changes accepts others.
One run at a time per --out (OUT/.lock). On a terminal a progress bar is drawn; otherwise, and with
--no-progress, a one-line heartbeat every train.heartbeat_every steps.

examples:
  hybrid train recipes/tiny-cpu.yaml
  hybrid train recipes/tiny-cpu.yaml --steps 50 train.lr=1e-3 train.batch_size=4
  hybrid train recipes/tiny-cpu.yaml --out runs/tiny --resume
  hybrid train recipes/tiny-cpu.yaml train.data.kind=assoc_recall train.data.num_kv_pairs=8
  torchrun --nproc-per-node 2 -m hybrid train recipes/carve-3to1.yaml --out runs/ddp
"""


def _options(p) -> None:
    p.add_argument("--out", "-o", default=None, help="output folder (default: runs/<recipe name>)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides train.steps)")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in OUT")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: accept train settings that differ from the checkpoint's")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar; a heartbeat line every train.heartbeat_every steps (metrics.jsonl "
                        "is still written)")


def add_arguments(p) -> None:
    p.add_argument("recipe", help="recipe YAML file")
    # everything after the recipe: overrides and options in any order (parsed again in main)
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                   help="recipe overrides, e.g. train.lr=1e-3 train.data.kind=assoc_recall layout.ratio=1:1")
    _options(p)


def main(args) -> int:
    from hybrid.blocks.spec import SpecError
    from hybrid.device import check_device_name
    from hybrid.recipes import RecipeError, load_recipe
    from hybrid.train.textfiles import DataFileError

    rank = int(os.environ.get("RANK", "0"))
    reparse_mixed(args, "hybrid train", _options)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: override {bad[0]!r} is not KEY=VALUE (e.g. train.lr=1e-3)", file=sys.stderr)
        return 2
    if args.allow_changes and not args.resume:
        print("error: --allow-changes: only meaningful with --resume", file=sys.stderr)
        return 2
    check_device_name(args.device)
    try:
        overrides = list(args.overrides)
        if args.steps is not None:
            overrides.append(f"train.steps={args.steps}")
        recipe = load_recipe(args.recipe, overrides=overrides)
    except (RecipeError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from hybrid.errors import HybridError
    from hybrid.train.loop import TrainingDiverged, run_training

    try:
        out = args.out or os.path.join("runs", recipe.name)
        res = run_training(recipe, out, device=args.device, progress=not args.no_progress, resume=args.resume,
                           allow_changes=args.allow_changes)
    except (HybridError, DataFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"error: training diverged: {e}", file=sys.stderr)
        return 1
    if rank != 0:
        return 0
    if res.interrupted:
        return 130
    ev = f", held-out loss {res.eval_loss:.4f}" if res.eval_loss is not None else ""
    mfu = f", MFU {100 * res.mfu:.1f}%" if res.mfu is not None else ""
    if res.final_loss is None:  # resumed at its last step: nothing left to train
        print(f"done: already at step {res.steps}{ev}")
    else:
        print(f"done: {res.steps} steps, final loss {res.final_loss:.4f}{ev}; {res.tokens_per_s:,.0f} tokens/s"
              f"{mfu} ({res.flops_source} FLOPs/token); {res.wall_time_s:.1f}s")
    for k, v in res.baselines.items():
        if isinstance(v, float):
            print(f"baseline {k.replace('_', ' ')}: {v:.4f}")
    print(f"model: {res.model_path} (HybridForCausalLM.from_pretrained)")
    print(f"metrics: {res.metrics_path}; plot: {res.plot_path}; checkpoint: {res.checkpoint}")
    return 0
