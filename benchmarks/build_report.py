"""The H200 build report: predicted vs measured costs of the ~350M CARVE 3:1 recipe at 4096 tokens.

Run from the repository root on the GPU machine (the package need not be installed):

    PYTHONPATH=. python benchmarks/build_report.py --out $OUT/build_report

It prints the table, and writes report.json and report.txt into --out. Defaults: the 350M recipe,
batch 8, length 4096, bf16 autocast, device cuda. If the step does not fit in memory the batch is
halved until it does (the report records the batch used and the failed attempts).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=os.path.join(ROOT, "recipes", "carve-350m-3to1.yaml"))
    p.add_argument("--out", default=os.path.join(ROOT, "runs", "build_report"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=4096)
    p.add_argument("--device", default="cuda")
    p.add_argument("--max-seconds", type=float, default=300.0)
    args = p.parse_args(argv)

    import torch
    from rich.console import Console

    from hybrid.analytic.report import build_report, render
    from hybrid.recipes import load_recipe

    os.makedirs(args.out, exist_ok=True)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device visible", file=sys.stderr)
        return 2
    recipe = load_recipe(args.recipe)
    batch = args.batch
    attempts = []
    report = None
    while batch >= 1:
        t0 = time.perf_counter()
        try:
            report = build_report(recipe, device=args.device, batch=batch, length=args.length,
                                  max_seconds=args.max_seconds)
            break
        except torch.cuda.OutOfMemoryError as e:
            attempts.append({"batch": batch, "error": str(e).splitlines()[0], "seconds": time.perf_counter() - t0})
            print(f"out of memory at batch {batch}; retrying with {batch // 2}", file=sys.stderr)
            torch.cuda.empty_cache()
            batch //= 2
        except Exception:
            traceback.print_exc()
            with open(os.path.join(args.out, "error.txt"), "w") as fh:
                fh.write(traceback.format_exc())
            return 1
    if report is None:
        print("error: the step does not fit even at batch 1", file=sys.stderr)
        return 1
    report["oom_attempts"] = attempts
    if torch.cuda.is_available():
        report["device"]["gpu"] = torch.cuda.get_device_name()
        report["device"]["cuda"] = torch.version.cuda
    with open(os.path.join(args.out, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2, default=str)
    console = Console(record=True, width=140)
    render(report, console)
    with open(os.path.join(args.out, "report.txt"), "w") as fh:
        fh.write(console.export_text())
    print(f"wrote {args.out}/report.json and report.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
