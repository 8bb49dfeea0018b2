"""Training throughput, model FLOPs utilisation and peak memory of whole models, layout by layout.

For each layout of a recipe (its templates and placement re-laid out at a recurrent:attention ratio:
transformer 0:1, 7:1, 3:1, 1:1 and all recurrent 1:0) and each shape (batch x tokens per sequence,
equal tokens per step by default), one training step as ``hybrid train`` runs it is timed: forward
under bf16 autocast (CUDA), backward, gradient clipping, AdamW (fused on CUDA, decay on matrices
only) and zeroing the gradients; the median over ``--steps`` after ``--warmup`` steps. Reported:
tokens/s, MFU (analytic training FLOPs per token x tokens/s / the device's peak bf16 FLOP/s; CUDA
only), and the CUDA peak memory of the timed steps. When ``hybrid calibrate`` has timed the recipe's
parts on this device, the calibrated prediction of the step (optimizer included) and of the peak
stands beside the measurement.

    PYTHONPATH=. python benchmarks/models.py                                  # the 350M recipe, CUDA
    PYTHONPATH=. python benchmarks/models.py recipes/tiny-cpu.yaml --shapes 2x64,1x128 --device cpu
    PYTHONPATH=. python benchmarks/models.py --layouts transformer,3:1 --shapes 8x4096 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from fractions import Fraction
from pathlib import Path

# run as a script, this folder comes first on sys.path, and its kernels.py would shadow the `kernels`
# package that transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

LAYOUTS = {"transformer": "0:1", "7:1": "7:1", "3:1": "3:1", "1:1": "1:1", "carve": "1:0"}
DEFAULT_SHAPES = "8x4096,2x16384,1x32768"


def parse_shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        try:
            b, t = (int(v) for v in item.lower().split("x"))
        except ValueError:
            sys.exit(f"error: bad shape {item!r}: use BATCHxLENGTH, e.g. 8x4096")
        if b < 1 or t < 2:
            sys.exit(f"error: bad shape {item!r}: batch >= 1 and length >= 2")
        out.append((b, t))
    return out


def parse_layouts(text: str) -> list[tuple[str, Fraction]]:
    """Names (transformer, carve) or recurrent:attention ratios -> (label, attention fraction)."""
    from hybrid.analytic.frontier import parse_fractions

    out = []
    for item in text.split(","):
        item = item.strip()
        ratio = LAYOUTS.get(item, item)
        try:
            (f,) = parse_fractions(ratio)
        except ValueError as e:
            sys.exit(f"error: layout {item!r}: {e} (or one of {', '.join(LAYOUTS)})")
        out.append((item, f))
    return out


def time_steps(model, batch: int, length: int, *, warmup: int, steps: int) -> dict:
    """Median seconds of a full training step (optimizer included) and the CUDA peak of the timed steps."""
    from hybrid.analytic.measure import time_calls
    from hybrid.blocks.model import bf16_autocast
    from hybrid.train.schedule import param_groups

    dev = next(model.parameters()).device
    groups, _ = param_groups(model, 0.1)
    fused = {"fused": True} if dev.type == "cuda" else {}
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, **fused)
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=g).to(dev)
    model.train()

    def step():
        with bf16_autocast(dev):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_calls(step, dev, warmup=warmup, repeats=steps)


def run(recipe, layouts, shapes, device: str, *, warmup: int, steps: int, cache_dir=None, log=print) -> dict:
    from hybrid.analytic.calibration import cache_dir as default_cache_dir
    from hybrid.analytic.calibration import hint, lookup
    from hybrid.analytic.costs import ModelCosts
    from hybrid.analytic.frontier import variant
    from hybrid.analytic.measure import build_model, count_parameters
    from hybrid.train.metrics import peak_flops

    dev = torch.device(device)
    peak = peak_flops(dev, bf16=dev.type == "cuda")
    folder = default_cache_dir(cache_dir)
    rows, uncalibrated = [], {}
    for label, f in layouts:
        r = variant(recipe, f)
        cfg = r.model_config_kwargs()
        costs = ModelCosts(cfg)
        table, why = lookup(cfg, device, folder)
        if table is None:
            uncalibrated[label] = why
        model = build_model(r, device)
        n_params = count_parameters(model)
        for batch, length in shapes:
            row = {"layout": label, "pattern": r.letters, "params": n_params, "batch": batch, "length": length,
                   "tokens": batch * length}
            try:
                m = time_steps(model, batch, length, warmup=warmup, steps=steps)
            except torch.OutOfMemoryError:
                m = None  # freed below, once the exception (and the step's tensors it holds) is gone
            if m is None:
                row["error"] = "out of memory"
                model.zero_grad(set_to_none=True)
                gc.collect()
                torch.cuda.empty_cache()
                rows.append(row)
                log(f"{label} {batch}x{length}: out of memory")
                continue
            fpt = costs.train_flops_per_token(length)["total"]
            tps = batch * length / m["seconds"]
            row.update(step_s=m["seconds"], all_step_s=m["all_seconds"], tokens_per_s=tps,
                       flops_per_token=fpt, mfu=fpt * tps / peak if peak else None, peak_bytes=m["peak_bytes"])
            if table is not None:
                p = table.predict_step(cfg, batch, length, optimizer=True, param_count=n_params)
                row["predicted_step_s"] = p["seconds"]
                row["predicted_peak_bytes"] = p["peak_bytes"] if dev.type == "cuda" else None
            rows.append(row)
            log(f"{label} ({r.letters}) {batch}x{length}: {m['seconds'] * 1e3:.1f} ms, {tps:,.0f} tokens/s")
        del model
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    ref = {(q["batch"], q["length"]): q for q in rows if q["layout"] == layouts[0][0] and "error" not in q}
    for q in rows:
        base = ref.get((q["batch"], q["length"]))
        if base is not None and "error" not in q:
            q["vs_first"] = q["tokens_per_s"] / base["tokens_per_s"]
            if q["peak_bytes"] and base["peak_bytes"]:
                q["peak_vs_first"] = q["peak_bytes"] / base["peak_bytes"]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    res = {"recipe": recipe.name, "path": recipe.path, "device": name, "torch": torch.__version__,
           "warmup": warmup, "steps": steps, "peak_flops": peak, "rows": rows}
    if uncalibrated:
        res["uncalibrated"] = uncalibrated  # layout -> why it has no calibrated prediction
        res["calibration_hint"] = hint(recipe.path, device, folder)
        log(res["calibration_hint"])
    return res


def _gib(x):
    return "-" if x is None else f"{x / 2**30:.1f} GiB"


def _rate(x):
    return f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:,.0f}"


def _err(pred, meas):
    if pred is None or not meas:
        return "-"
    value = f"{pred * 1e3:.0f} ms" if pred < 10 else f"{pred:.2f} s"
    return f"{value} ({(pred - meas) / meas * 100:+.0f}%)"


def markdown(res: dict) -> str:
    rows = res["rows"]
    first = rows[0]["layout"] if rows else ""
    predicted = any("predicted_step_s" in q for q in rows)
    head = ["layout", "batch x T", "tokens/s", f"vs {first}", "MFU", "peak", f"peak vs {first}"]
    if predicted:
        head += ["calibrated step (err)", "calibrated peak (err)"]
    lines = [f"{res['recipe']} on {res['device']}: training step with AdamW, median of {res['steps']} "
             f"after {res['warmup']} warmup", "", "| " + " | ".join(head) + " |",
             "| " + " | ".join("---" for _ in head) + " |"]
    for q in rows:
        cells = [f"{q['layout']} ({q['pattern']})" if len(q["pattern"]) <= 8 else q["layout"],
                 f"{q['batch']} x {q['length']}"]
        if "error" in q:
            cells += [q["error"]] + ["-"] * (len(head) - 3)
        else:
            cells += [_rate(q["tokens_per_s"]), "-" if "vs_first" not in q else f"{q['vs_first']:.2f}x",
                      "-" if q["mfu"] is None else f"{q['mfu'] * 100:.1f}%", _gib(q["peak_bytes"]),
                      "-" if "peak_vs_first" not in q else f"{q['peak_vs_first']:.2f}x"]
            if predicted:
                pp, mp = q.get("predicted_peak_bytes"), q["peak_bytes"]
                cells += [_err(q.get("predicted_step_s"), q["step_s"]),
                          "-" if not (pp and mp) else f"{_gib(pp)} ({(pp - mp) / mp * 100:+.0f}%)"]
        lines.append("| " + " | ".join(cells) + " |")
    if res.get("uncalibrated"):
        lines += ["", f"no calibrated prediction for {', '.join(res['uncalibrated'])}: {res['calibration_hint']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", nargs="?", default="recipes/carve-350m-3to1.yaml")
    ap.add_argument("--layouts", default=",".join(LAYOUTS),
                    help="names (transformer, carve) or recurrent:attention ratios; the first is the reference")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="BATCHxLENGTH list (default %(default)s)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per shape (default 2)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per shape, median kept (default 3)")
    ap.add_argument("--cache-dir", default=None, help="calibration tables (default $XDG_CACHE_HOME/hybrid)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON after the table")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)

    from hybrid.recipes import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as e:
        sys.exit(f"error: {e}")
    if args.warmup < 1 or args.steps < 1:
        sys.exit("error: --warmup and --steps must be >= 1 (the first step allocates the optimizer state)")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA device is available here")
    res = run(recipe, parse_layouts(args.layouts), parse_shapes(args.shapes), device, warmup=args.warmup,
              steps=args.steps, cache_dir=args.cache_dir, log=lambda m: print(m, file=sys.stderr))
    print(markdown(res))
    if args.json:
        print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
