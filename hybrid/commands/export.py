"""``hybrid export MODEL --out DIR``: a ``from_pretrained``-ready folder from a run or a checkpoint."""

from __future__ import annotations

import sys

NAME = "export"
HELP = "write a from_pretrained-ready model folder from a training run or one of its checkpoints"
DESCRIPTION = """Write DIR as a model folder that HybridForCausalLM.from_pretrained(DIR) loads: config.json,
model.safetensors, the tokenizer, and the run's recipe.json and train_config.json.

MODEL is the folder `hybrid train` wrote, one of its checkpoints (OUT/checkpoints/step_N; its files
are checked against their sha256 and the weights for NaN/Inf first), or a run folder that stopped
before its end (its newest good checkpoint is used).

examples:
  hybrid export runs/tiny-cpu/checkpoints/step_000200 --out runs/tiny-cpu-step200
  hybrid ruler runs/tiny-cpu-step200 --tasks niah_single_1 --lengths 1x
"""


def add_arguments(p) -> None:
    p.add_argument("model", help="run folder, or OUT/checkpoints/step_N")
    p.add_argument("--out", "-o", required=True, help="folder to write (created; files in it are replaced)")


def main(args) -> int:
    from hybrid.train.trained import export_trained, find_trained

    found = find_trained(args.model, log=lambda m: print(m, file=sys.stderr))
    out = export_trained(found, args.out)
    print(f"exported {found.describe()} to {out} (HybridForCausalLM.from_pretrained)")
    return 0
