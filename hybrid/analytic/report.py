"""The build report: analytic predictions next to measurements, with the relative error per row.

``build_report(recipe, ...)`` returns a JSON-ready dict; ``render(report, console)`` prints it as rich
tables. Relative error is (predicted - measured) / measured.
"""

from __future__ import annotations

import math
import platform
import time

import torch

from hybrid.analytic import measure as M
from hybrid.analytic.calibration import cache_dir, hint, lookup, table_path
from hybrid.analytic.compare import crossovers, recall_capacity
from hybrid.analytic.costs import ModelCosts
from hybrid.analytic.rates import rates_for
from hybrid.analytic.roofline import predict_step_time

CACHE_LENGTHS = (1024, 4096, 16384, 65536, 131072)


def _row(key, quantity, unit, predicted, measured=None, note=""):
    rel = None
    if predicted is not None and isinstance(measured, (int, float)) and measured:
        rel = (predicted - measured) / measured
    return {"key": key, "quantity": quantity, "unit": unit, "predicted": predicted, "measured": measured,
            "rel_error": rel, "note": note}


def count_flops(model, batch: int, length: int) -> float | None:
    """FLOPs of one forward+backward step as counted by torch's FlopCounterMode (aten-level ops only)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover
        return None
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (batch, length), device=device)
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        with M._autocast(device):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def build_report(recipe, device: str = "cpu", batch: int | None = None, length: int | None = None,
                 measure: bool = True, max_seconds: float = 120.0, lengths=CACHE_LENGTHS,
                 tokens_per_fact: int = 8, count: bool = True, calibration_dir: str | None = None,
                 log=print) -> dict:
    dev = torch.device(device)
    train = recipe.train or {}
    batch = batch or int(train.get("batch_size", 1))
    length = length or int(train.get("seq_len", min(2048, recipe.model["max_position_embeddings"])))
    b = 2 if dev.type == "cuda" else 4
    cfg = recipe.model_config_kwargs()
    costs = ModelCosts(cfg)
    rates = rates_for(device)
    params = costs.params()
    flops = costs.train_flops_per_token(length)
    step = predict_step_time(costs, batch, length, b, rates)
    peak = costs.train_peak_bytes(batch, length, b)
    cache_at_n = costs.cache_bytes(length, b)
    folder = cache_dir(calibration_dir)
    table, _ = lookup(cfg, device, folder)
    cal = table.predict_step(cfg, batch, length, param_count=params["total"]) if table else None
    not_measured: list[str] = []
    meas: dict = {}

    if measure:
        # the roofline is a lower bound; on a CPU the chunked operator runs far below it
        guess = cal["seconds"] if cal is not None else step["seconds"] * (30 if dev.type == "cpu" else 3)
        prefill_guess = guess / (3 * batch)  # a forward of one sequence
        time_step = guess <= max_seconds
        on = device if time_step or prefill_guess <= max_seconds else "meta"
        log(f"building the model ({params['total'] / 1e6:.0f}M parameters) on {on}"
            + (" (shapes only: every timed measurement is over --max-seconds)" if on == "meta" else ""))
        t0 = time.perf_counter()
        model = M.build_model(recipe, on)
        meas["build_seconds"] = time.perf_counter() - t0
        meas["params"] = M.count_parameters(model)
        emb = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        meas["non_embedding"] = meas["params"] - emb.numel() - (0 if head is emb else head.numel())
        if on == "meta":
            not_measured.append(f"cache bytes: a prefill of {length} tokens would take about {prefill_guess:.3g} s "
                                f"here, over the --max-seconds budget of {max_seconds:g} s")
        else:
            log(f"measuring the cache after a prefill of {length} tokens")
            meas["cache"] = M.prefill_cache_bytes(model, length)
        if not time_step:
            not_measured.append(f"step time and FLOP count: a step is predicted to take {guess:.3g} s, over the "
                                f"--max-seconds budget of {max_seconds:g} s; "
                                "use a smaller --batch/--length or raise --max-seconds")
        else:
            if count:
                log("counting FLOPs of one forward+backward")
                try:
                    meas["flops_counted"] = count_flops(model, 1, length)
                except Exception as e:  # the counter does not know every op; the report says so
                    not_measured.append(f"FLOP count: torch's FlopCounterMode failed ({type(e).__name__}: {e})")
            reps = 5 if dev.type == "cuda" else 2
            log(f"timing {reps} training steps at batch {batch} x {length} tokens")
            r = M.time_train_step(model, batch, length, warmup=2 if dev.type == "cuda" else 1, repeats=reps)
            meas["step_seconds"] = r["seconds"]
            meas["step_all_seconds"] = r["all_seconds"]
            meas["peak_bytes"] = r["peak_bytes"]
        if dev.type != "cuda":
            not_measured.append("peak memory: only measured on CUDA (torch.cuda.max_memory_allocated)")
        del model
    else:
        not_measured.append("all measurements: --no-measure was given (no model was built)")

    rows = [
        _row("params", "parameters (total)", "count", params["total"], meas.get("params")),
        _row("non_embedding", "parameters (non-embedding)", "count", params["non_embedding"],
             meas.get("non_embedding")),
        _row("train_flops", f"training FLOPs / token at N={length}", "FLOP", flops["total"],
             meas["flops_counted"] / length if meas.get("flops_counted") else None,
             "measured: torch FlopCounterMode (aten ops; custom kernels are not counted)"
             if meas.get("flops_counted") else ""),
        _row("act_mem", "activation memory / token (training)", "B", costs.activation_bytes_per_token(b), None,
             "saved for backward, estimate"),
        _row("decode_flops", f"decode FLOPs / token at T={length}", "FLOP", costs.decode_flops_per_token(length)),
        _row("cache", f"KV cache + state after a {length}-token prefill (B=1)", "B", cache_at_n["total"],
             meas.get("cache")),
    ]
    if cal is not None:
        rows.append(_row("step_time_calibrated", f"train step time, B={batch} N={length} (calibrated)", "s",
                         cal["seconds"], meas.get("step_seconds"), f"parts timed on {cal['device']}"))
    rows += [
        _row("step_time", f"train step time, B={batch} N={length} (roofline)", "s", step["seconds"],
             meas.get("step_seconds"), f"floor: lower bound on {rates.name}"),
    ]
    if cal is not None:
        rows.append(_row("peak_mem_calibrated", f"peak memory of a train step, B={batch} N={length} (calibrated)",
                         "B", cal["peak_bytes"], meas.get("peak_bytes"),
                         "weights+grads fp32, what each part saved, largest transient"))
    rows += [
        _row("peak_mem", f"peak memory of a train step, B={batch} N={length}", "B", peak["total"],
             meas.get("peak_bytes"), "analytic: weights+grads fp32, activations, logits"),
    ]
    cx = crossovers(cfg, b)
    report = {
        "recipe": recipe.name,
        "path": recipe.path,
        "layout": recipe.letters,
        "layer_types": recipe.layer_types,
        "device": {"requested": device, "rates": rates.to_dict(), "bytes_per_activation": b,
                   "torch": torch.__version__, "python": platform.python_version()},
        "batch": batch,
        "length": length,
        "rows": rows,
        "train_flops_parts": flops,
        "peak_memory_parts": peak,
        "step_time_parts": step["parts"],
        "calibration": ({"table": str(table_path(table.key, folder)), "key": table.key, "prediction": cal}
                        if cal is not None else {"hint": hint(recipe.path, device, folder)}),
        "cache_by_length": [{"length": t, **costs.cache_bytes(t, b),
                             "decode_flops_per_token": costs.decode_flops_per_token(t),
                             "recall_capacity_facts": recall_capacity(cfg["layers"], t, tokens_per_fact)}
                            for t in lengths],
        "crossover_vs_transformer": cx,
        "recall_capacity": {"tokens_per_fact": tokens_per_fact,
                            "facts_at_length": recall_capacity(cfg["layers"], length, tokens_per_fact)},
        "measured_extra": {k: v for k, v in meas.items() if k in ("build_seconds", "step_all_seconds")},
        "not_measured": not_measured,
    }
    return report


# ----------------------------------------------------------------------------------------------------
# rendering


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "s":
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "B":
        for u, s in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if abs(value) >= s:
                return f"{value / s:.4g} {u}"
        return f"{value:.0f} B"
    if unit == "count":
        return f"{int(value):,}"
    for u, s in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= s:
            return f"{value / s:.4g} {u}{unit}"
    return f"{value:.4g} {unit}"


def _rel(r) -> str:
    if r is None:
        return "-"
    return f"{r * 100:+.1f}%" if abs(r) < 10 else f"x{r + 1:.3g}"


def render(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    rates = report["device"]["rates"]
    console.print(f"[bold]{report['recipe']}[/bold]  ({report['path']})")
    console.print(f"layout: {report['layout']}")
    console.print(f"device: {rates['name']}: {fmt(rates['matmul_flops'], 'FLOP/s')}, "
                  f"{fmt(rates['bandwidth'], 'B')}/s ({rates['source']})")
    t = Table(title="predicted vs measured")
    for col, just in (("quantity", "left"), ("predicted", "right"), ("measured", "right"), ("rel. error", "right"),
                      ("note", "left")):
        t.add_column(col, justify=just)
    for r in report["rows"]:
        t.add_row(r["quantity"], fmt(r["predicted"], r["unit"]), fmt(r["measured"], r["unit"]), _rel(r["rel_error"]),
                  r["note"])
    console.print(t)
    c = Table(title="decode cost by context length (B=1, predicted)")
    for col in ("context", "KV cache + state", "decode FLOPs/token", "recall capacity (facts)"):
        c.add_column(col, justify="right")
    for r in report["cache_by_length"]:
        c.add_row(f"{r['length']:,}", fmt(r["total"], "B"), fmt(r["decode_flops_per_token"], "FLOP"),
                  f"{r['recall_capacity_facts']:,.0f}")
    console.print(c)
    cx = report["crossover_vs_transformer"]

    def say(v):
        return "always cheaper" if v == "always" else ("never (within 16M tokens)" if v is None else f"{v:,} tokens")

    console.print(f"crossover vs {cx['reference']}: cache memory {say(cx['cache_memory'])}, decode FLOPs "
                  f"{say(cx['decode_flops'])}, training FLOPs {say(cx['train_flops'])}")
    pred = report.get("calibration", {}).get("prediction")
    if pred:
        k = Table(title=f"calibrated step by part (forward + backward, on {pred['device']})")
        for col in ("part", "layers", "time", "share", "saved for backward"):
            k.add_column(col, justify="left" if col == "part" else "right")
        total = pred["forward_s"] + pred["backward_s"]
        for q in sorted(pred["parts"], key=lambda q: -q["seconds"]):
            k.add_row(q["part"], str(q["count"]), fmt(q["seconds"], "s"), f"{q['seconds'] / total * 100:.0f}%",
                      fmt(q["saved_bytes"], "B"))
        console.print(k)
    if "hint" in report.get("calibration", {}):
        console.print(f"[yellow]calibration:[/yellow] {report['calibration']['hint']}")
    for line in report["not_measured"]:
        console.print(f"[yellow]not measured:[/yellow] {line}")


def finite(x):
    return x if not (isinstance(x, float) and (math.isnan(x) or math.isinf(x))) else None
