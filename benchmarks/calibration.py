"""Calibrated predictions against measurements, recipe by recipe: one markdown table.

For each recipe (default: every shipped recipe, sweep files skipped) at its training batch and length,
``hybrid build``'s report is made with the measurement on: the median timed forward + backward step
and its CUDA peak memory, next to the calibrated prediction (``hybrid calibrate`` must have run on this
device first, with the same --cache-dir) and the roofline floor. A recipe whose step does not fit in
memory is listed as such.

    PYTHONPATH=. python benchmarks/calibration.py --cache-dir runs/calibration
    PYTHONPATH=. python benchmarks/calibration.py recipes/tiny-cpu.yaml --device cpu --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# run as a script, this folder comes first on sys.path, and its kernels.py would shadow the `kernels`
# package that transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402


def _pct(pred, meas):
    return "-" if pred is None or not meas else f"{(pred - meas) / meas * 100:+.1f}%"


def _ms(x):
    return "-" if x is None else f"{x * 1e3:.1f} ms"


def _gib(x):
    return "-" if x is None else f"{x / 2**30:.2f} GiB"


def row_of(report: dict) -> dict:
    rows = {r["key"]: r for r in report["rows"]}
    get = lambda k, f: rows[k][f] if k in rows else None  # noqa: E731
    return {"recipe": report["recipe"], "batch": report["batch"], "length": report["length"],
            "step_s": get("step_time", "measured"), "calibrated_s": get("step_time_calibrated", "predicted"),
            "roofline_s": get("step_time", "predicted"), "peak_bytes": get("peak_mem", "measured"),
            "calibrated_peak_bytes": get("peak_mem_calibrated", "predicted"),
            "analytic_peak_bytes": get("peak_mem", "predicted"), "calibration": report.get("calibration", {})}


def markdown(rows: list[dict], device: str) -> str:
    head = ["recipe", "batch x T", "measured step", "calibrated (err)", "roofline (err)", "measured peak",
            "calibrated peak (err)", "analytic peak (err)"]
    out = [f"Calibrated predictions on {device}: forward + backward step, median of timed steps", "",
           "| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for q in rows:
        if "error" in q:
            out.append(f"| {q['recipe']} | {q['batch']} x {q['length']} | {q['error']} |" + " - |" * 5)
            continue
        out.append("| " + " | ".join([
            q["recipe"], f"{q['batch']} x {q['length']}", _ms(q["step_s"]),
            "-" if q["calibrated_s"] is None else f"{_ms(q['calibrated_s'])} ({_pct(q['calibrated_s'], q['step_s'])})",
            f"{_ms(q['roofline_s'])} ({_pct(q['roofline_s'], q['step_s'])})", _gib(q["peak_bytes"]),
            "-" if q["calibrated_peak_bytes"] is None else
            f"{_gib(q['calibrated_peak_bytes'])} ({_pct(q['calibrated_peak_bytes'], q['peak_bytes'])})",
            f"{_gib(q['analytic_peak_bytes'])} ({_pct(q['analytic_peak_bytes'], q['peak_bytes'])})"]) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipes", nargs="*", help="recipe files (default: every shipped recipe)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    ap.add_argument("--cache-dir", default=None, help="calibration tables (default $XDG_CACHE_HOME/hybrid)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="skip a step predicted to take longer")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON after the table")
    args = ap.parse_args(argv)

    from hybrid.analytic.report import build_report
    from hybrid.commands.calibrate import shipped_recipes
    from hybrid.recipes import RecipeError, is_sweep_file, load_recipe

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for path in args.recipes or shipped_recipes():
        try:
            if is_sweep_file(path):
                continue
            recipe = load_recipe(path)
        except RecipeError as e:
            sys.exit(f"error: {e}")
        print(f"{recipe.name}: building and timing", file=sys.stderr)
        try:
            rep = build_report(recipe, device=device, max_seconds=args.max_seconds, count=False,
                               calibration_dir=args.cache_dir, log=lambda m: print(m, file=sys.stderr))
            rows.append(row_of(rep))
        except torch.OutOfMemoryError:
            train = recipe.train or {}
            rows.append({"recipe": recipe.name, "batch": train.get("batch_size"), "length": train.get("seq_len"),
                         "error": "does not fit in memory"})
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    print(markdown(rows, name))
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
