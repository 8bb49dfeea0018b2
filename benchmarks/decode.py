"""Decoding speed of a recipe's model in several layouts: prefill time, per-token latency, tokens/s.

For every layout (``--layouts``: patterns of the recipe's blocks, tiled to its depth), the model is
built with random weights in bf16 on the GPU. For every context (``--contexts``): one row of random
tokens is prefilled through the dynamic cache (the whole prompt at once), twice, and the second is
timed (the first absorbs kernel compilation): "prefill ms" is one row's prompt. For every batch
(``--batches``): a static cache of context + the decoded tokens is allocated, its one-token step
captured as a CUDA graph (``hybrid.blocks.decode_graph``), the prefilled row copied into every row,
and greedy steps are timed through the model's forward (each step's argmax is the next token), as
``generate`` runs them: the median over ``--repeats`` windows of ``--steps`` tokens. tokens/s is
batch / step time. A combination whose cache would not fit in free memory (or ``--memory-budget``)
is skipped and listed; where the transformer (``A``) is skipped so, it is also timed at the largest
batch it fits, and the other layouts' "vs transformer" ratio at that batch is taken against it (each
layout at the batch it can hold; the ratios are printed below the table and kept in the JSON).
With ``--dynamic`` the same steps are also timed through the dynamic ``HybridCache`` (eager, the
path of CPU and beam search; the prefilled row repeated B times), and the table gains that column and
the speed-up. On a CPU the same runs without graphs (eager steps over the static cache).

    PYTHONPATH=. python3 benchmarks/decode.py --json out/decode.json
    PYTHONPATH=. python3 benchmarks/decode.py --layouts C,A --contexts 131072 --batches 32
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

# this folder holds kernels.py, which would shadow the `kernels` package that transformers looks for
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

LAYOUTS = ("A", "CCCA", "CCCCCCCA", "C")
CONTEXTS = (8192, 32768, 131072)
BATCHES = (1, 16, 64)
NAMES = {"A": "transformer", "CCCA": "3:1", "CCCCCCCA": "7:1", "C": "all CARVE"}
WARMUP_STEPS = 3
FREE_SHARE = 0.9  # of the free memory a run may plan to use


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"--{what}: expected comma-separated integers, got {text!r}")
    if not vals or any(v < 1 for v in vals):
        sys.exit(f"--{what}: expected positive integers, got {text!r}")
    return vals


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def build(recipe: str, pattern: str, dev: torch.device):
    from hybrid.blocks import HybridConfig, HybridForCausalLM
    from hybrid.recipes import load_recipe

    rec = load_recipe(recipe, [f"layout.pattern={pattern}"])
    torch.manual_seed(0)
    model = HybridForCausalLM(HybridConfig(**rec.model_config_kwargs()))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    return model.to(device=dev, dtype=dtype).eval(), rec.letters


def cache_bytes_per_row(config, max_len: int, elem: int) -> int:
    """Bytes of one row of a StaticHybridCache (keys/values/slot positions; fp32 states)."""
    total = 8  # lengths
    for b in config.layers:
        if b["kind"] == "attention":
            slots = max_len if b["window"] is None else min(b["window"], max_len)
            total += slots * (2 * b["kv_heads"] * b["head_dim"] * elem + 8)
        else:
            H, K, V = b["heads"], b["head_dim"], b["value_dim"]
            total += 4 * ((2 * H * K + H * V) * (b["conv_size"] - 1) + H * K * V + 2 * H * V) + 8
    return total


def scores_bytes(config, batch: int, max_len: int) -> int:
    """The largest transient of an attention step: fp32 scores [B, H, slots], a few copies."""
    heads = [b["heads"] * (max_len if b["window"] is None else min(b["window"], max_len))
             for b in config.layers if b["kind"] == "attention"]
    return 4 * 4 * batch * max(heads, default=0)


def prefill_bytes(config, context: int) -> int:
    """One row's prefill: its dynamic cache and activations (hidden states, MLP, projections), loosely."""
    d = config.d_model
    hidden = config.mlp.get("hidden", 4 * d) if isinstance(config.mlp, dict) else 4 * d
    return cache_bytes_per_row(config, context, 2) + context * (24 * d + 8 * hidden) * 2


def time_steps(model, cache, first, steps: int, repeats: int, dev) -> list[float]:
    tok = first
    out = []
    with torch.no_grad():
        for _ in range(WARMUP_STEPS):
            tok = model(input_ids=tok, cache=cache).logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(repeats):
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(steps):
                tok = model(input_ids=tok, cache=cache).logits[:, -1].argmax(-1, keepdim=True)
            _sync(dev)
            out.append((time.perf_counter() - t0) / steps)
    return out


def free_bytes(dev, budget: float | None) -> float | None:
    """Memory a run may plan to use: the device's free memory (CUDA), capped by ``budget`` bytes; None
    (no limit) on a CPU without a budget."""
    free = None
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info(dev)[0]
    if budget is not None:
        free = budget if free is None else min(free, budget)
    return None if free is None else FREE_SHARE * free


def decode_bytes(cfg, batch: int, max_len: int, elem: int) -> int:
    """The static cache of ``batch`` rows and an attention step's largest transient."""
    return batch * cache_bytes_per_row(cfg, max_len, elem) + scores_bytes(cfg, batch, max_len)


def time_batch(model, dyn, first_tok, b: int, max_len: int, steps: int, repeats: int, dev, dynamic: bool) -> dict:
    """Greedy steps of ``b`` rows through a static cache (captured on CUDA) holding the prefilled row
    ``dyn`` in every row, and with ``dynamic`` through copies of ``dyn``: the row's timing fields."""
    from hybrid.blocks.decode_graph import CapturedStep
    from hybrid.blocks.static_cache import StaticHybridCache

    cache = None
    try:
        with torch.no_grad():
            cache = StaticHybridCache(model.config, b, max_len, device=dev, dtype=next(model.parameters()).dtype)
            if dev.type == "cuda":
                cache.step_fn = CapturedStep(model, cache)
            for r in range(b):
                cache.load(dyn, start=r)
        times = time_steps(model, cache, first_tok.expand(b, 1).contiguous(), steps, repeats, dev)
    finally:
        del cache
    ms = 1000 * statistics.median(times)
    out = dict(ms_per_token=round(ms, 3), tokens_per_s=round(1000 * b / ms, 1), graph=dev.type == "cuda",
               windows_ms=[round(1000 * t, 3) for t in times])
    if dynamic:
        rep = copy.deepcopy(dyn)
        rep.batch_repeat_interleave(b)
        try:
            dt = time_steps(model, rep, first_tok.expand(b, 1).contiguous(), steps, repeats, dev)
            out["dynamic_ms_per_token"] = round(1000 * statistics.median(dt), 3)
        except torch.cuda.OutOfMemoryError:
            out["dynamic_ms_per_token"] = None
        del rep
    return out


class Prefilled:
    """What the batches of one (layout, context) share: the model, its prefilled row (``dyn``, its
    dynamic cache, and ``first_tok``, the greedy next token) and the timing plan."""

    def __init__(self, model, dyn, first_tok: torch.Tensor, max_len: int, steps: int, repeats: int,
                 dynamic: bool, budget: float | None):
        self.model, self.dyn, self.first_tok, self.max_len = model, dyn, first_tok, max_len
        self.steps, self.repeats, self.dynamic, self.budget = steps, repeats, dynamic, budget

    def attempt(self, b: int, row: dict) -> dict:
        """``row`` with its timing at batch ``b``, or with ``skipped``: the cache does not fit, or ran out
        of memory."""
        dev = self.first_tok.device
        elem = 2 if dev.type == "cuda" else 4
        free = free_bytes(dev, self.budget)
        need = decode_bytes(self.model.config, b, self.max_len, elem)
        if free is not None and need > free:
            return dict(row, skipped=f"the cache needs about {need / 2**30:.1f} GiB, "
                                     f"{free / FREE_SHARE / 2**30:.1f} GiB free")
        oom = None
        try:
            return dict(row, **time_batch(self.model, self.dyn, self.first_tok, b, self.max_len, self.steps,
                                          self.repeats, dev, self.dynamic))
        except torch.cuda.OutOfMemoryError as e:
            oom = str(e).splitlines()[0][:80]
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        return dict(row, skipped=f"out of memory ({oom})")

    def largest_fit(self, b: int, row: dict) -> dict | None:
        """The timed row at the largest batch below ``b`` that fits, or None."""
        dev = self.first_tok.device
        free = free_bytes(dev, self.budget)
        per_row = decode_bytes(self.model.config, 1, self.max_len, 2 if dev.type == "cuda" else 4)
        fit = b - 1 if free is None else min(b - 1, int(free // per_row))
        while fit >= 1:
            r = self.attempt(fit, dict(row, batch=fit, stands_in_for=b))
            if "skipped" not in r:
                return r
            fit = fit * 3 // 4 if fit > 3 else fit - 1
        return None


def prefill(model, ctx: int, dev) -> tuple[object, torch.Tensor, float]:
    """One row of ``ctx`` random tokens through the dynamic cache, twice (the second is timed; the first
    may compile for this length): (its cache, the greedy next token, milliseconds)."""
    ids = torch.randint(3, model.config.vocab_size, (1, ctx), generator=torch.Generator().manual_seed(ctx)).to(dev)
    with torch.no_grad():
        for _ in range(2):
            out = None
            _sync(dev)
            t0 = time.perf_counter()
            out = model(ids, use_cache=True, logits_to_keep=1)
            _sync(dev)
            ms = 1000 * (time.perf_counter() - t0)
    dyn = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    return dyn, out.logits[:, -1].argmax(-1, keepdim=True), ms


def run_layout(recipe, pattern, contexts, batches, steps, repeats, dev, log, dynamic=False,
               budget: float | None = None) -> list[dict]:
    """Rows of one layout. Where the transformer (``A``) does not fit a batch, it is also timed at the
    largest batch it fits (a row with ``stands_in_for`` = the batch asked), for the ratios."""
    model, letters = build(recipe, pattern, dev)
    cfg = model.config
    rows = []

    def logged(r):
        if "skipped" in r:
            log(f"{pattern:>10} {r['context']:>7} x {r['batch']:<3} skipped: {r['skipped']}")
        else:
            log(f"{pattern:>10} {r['context']:>7} x {r['batch']:<3} prefill {r['prefill_ms']:9.1f} ms   "
                f"{r['ms_per_token']:8.3f} ms/token   {r['tokens_per_s']:10.1f} tokens/s")
        rows.append(r)
        return r

    for ctx in contexts:
        base = dict(layout=pattern, name=NAMES.get(pattern, pattern), letters=letters, context=ctx)
        free = free_bytes(dev, budget)
        if free is not None and prefill_bytes(cfg, ctx) > free:
            for b in batches:
                logged(dict(base, batch=b, skipped=f"the prefill of one row needs about "
                            f"{prefill_bytes(cfg, ctx) / 2**30:.1f} GiB, {free / FREE_SHARE / 2**30:.1f} GiB free"))
            continue
        dyn, first_tok, prefill_ms = prefill(model, ctx, dev)
        max_len = ctx + WARMUP_STEPS + steps * repeats + 1
        run = Prefilled(model, dyn, first_tok, max_len, steps, repeats, dynamic, budget)
        for b in batches:
            row = dict(base, batch=b, prefill_ms=round(prefill_ms, 2), max_len=max_len)
            if "skipped" in logged(run.attempt(b, row)) and pattern == "A":
                fit = run.largest_fit(b, row)  # for the ratios of the other layouts at batch b
                if fit is not None:
                    logged(fit)
        del run, dyn
    del model
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def reference(rows: list[dict]) -> dict:
    """(context, batch) -> the transformer's row that a layout's tokens/s is compared with: the one at
    that batch, else the one timed at the largest batch it fits in its place."""
    ref = {}
    for r in rows:
        if r["layout"] == "A" and "tokens_per_s" in r:
            key = (r["context"], r.get("stands_in_for", r["batch"]))
            if key not in ref or "stands_in_for" in ref[key]:
                ref[key] = r
    return ref


def ratios(rows: list[dict]) -> list[dict]:
    """tokens/s of every timed row of another layout over the transformer's (``reference``)."""
    ref = reference(rows)
    out = []
    for r in rows:
        a = ref.get((r["context"], r["batch"]))
        if r["layout"] != "A" and "tokens_per_s" in r and a is not None:
            out.append(dict(layout=r["layout"], name=r["name"], context=r["context"], batch=r["batch"],
                            transformer_batch=a["batch"], ratio=round(r["tokens_per_s"] / a["tokens_per_s"], 2)))
    return out


def markdown(rows: list[dict]) -> str:
    ref = reference(rows)
    dyn = any("dynamic_ms_per_token" in r for r in rows)
    head = "| layout | context | batch | prefill, one row (ms) | ms per token | tokens/s | vs transformer |"
    rule = "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    if dyn:
        head += " dynamic cache, ms per token | speed-up |"
        rule += " ---: | ---: |"
    lines = [head, rule]
    for r in rows:
        name = f"{r['name']} ({r['layout']})" if r["name"] != r["layout"] else r["layout"]
        pre = f"{r['prefill_ms']:.1f}" if "prefill_ms" in r else "-"
        batch = f"{r['batch']} (the most that fits; {r['stands_in_for']} asked)" if "stands_in_for" in r \
            else str(r["batch"])
        if "skipped" in r:
            lines.append(f"| {name} | {r['context']} | {batch} | {pre} | skipped: {r['skipped']} | | |"
                         + (" | |" if dyn else ""))
            continue
        a = ref.get((r["context"], r["batch"]))
        ratio = "-"
        if a is not None and "stands_in_for" not in r:
            ratio = f"{r['tokens_per_s'] / a['tokens_per_s']:.1f}x"
            if a["batch"] != r["batch"]:
                ratio += f" (transformer at batch {a['batch']})"
        line = (f"| {name} | {r['context']} | {batch} | {pre} | {r['ms_per_token']:.3f} | "
                f"{r['tokens_per_s']:.1f} | {ratio} |")
        if dyn:
            d = r.get("dynamic_ms_per_token")
            line += f" {d:.3f} | {d / r['ms_per_token']:.1f}x |" if d else " out of memory | |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/carve-350m-3to1.yaml", help="the model (default: %(default)s)")
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help="layout patterns (default: %(default)s)")
    ap.add_argument("--contexts", default=",".join(map(str, CONTEXTS)), help="prompt tokens (default: %(default)s)")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="rows (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=16, help="tokens per timed window (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed windows; the median is kept (default: %(default)s)")
    ap.add_argument("--dynamic", action="store_true",
                    help="also time the steps through the dynamic cache, eagerly (the path before the static cache)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--memory-budget", type=float, default=None, metavar="GIB",
                    help="plan as if at most this much memory were free (default: the GPU's free memory; "
                         "no limit on a CPU)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    if not layouts:
        sys.exit("--layouts: expected comma-separated patterns such as A,CCCA")
    contexts, batches = _ints(args.contexts, "contexts"), _ints(args.batches, "batches")
    if args.steps < 1 or args.repeats < 1:
        sys.exit("--steps and --repeats must be positive")
    if args.memory_budget is not None and args.memory_budget <= 0:
        sys.exit("--memory-budget must be positive")
    budget = None if args.memory_budget is None else args.memory_budget * 2**30
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    from hybrid.recipes.errors import RecipeError

    rows = []
    t0 = time.perf_counter()
    for pattern in layouts:
        try:
            rows += run_layout(args.recipe, pattern, contexts, batches, args.steps, args.repeats, dev, log,
                               dynamic=args.dynamic, budget=budget)
        except RecipeError as e:
            sys.exit(f"--layouts {pattern}: {e}")
    table = markdown(rows)
    print(table)
    summary = ratios(rows)
    for q in summary:
        at = "" if q["transformer_batch"] == q["batch"] else \
            f" against the transformer at batch {q['transformer_batch']}, the most it fits"
        print(f"tokens/s {q['name']} / transformer at context {q['context']}, batch {q['batch']}{at}: "
              f"{q['ratio']:.2f}x")
    skipped = [r for r in rows if "skipped" in r]
    if skipped:
        print(f"\nskipped: {len(skipped)} of {len(rows)} (see the table)")
    if args.json:
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                "torch": torch.__version__, "recipe": args.recipe, "steps": args.steps, "repeats": args.repeats,
                "dtype": "bf16" if dev.type == "cuda" else "fp32", "memory_budget_gib": args.memory_budget,
                "wall_s": round(time.perf_counter() - t0, 1)}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "ratios": summary, "markdown": table}, f, indent=1)


if __name__ == "__main__":
    main()
