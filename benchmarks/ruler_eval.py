"""RULER evaluation speed of one model: the CUDA-graph decode path against the dynamic cache before it.

The model (a folder written by ``hybrid train``, or a recipe built with random weights) is evaluated
twice on the same samples by ``hybrid.eval.ruler.runner.evaluate``, the evaluation ``hybrid ruler``
runs (samples, greedy generation in left-padded batches through the model's ``generate``, scoring):

- static: as ``hybrid ruler`` decodes. On CUDA, ``greedy_new_tokens``: a preallocated
  ``StaticHybridCache`` whose one-token step is a captured CUDA graph (``hybrid.blocks.decode_graph``),
  replayed in a loop that reads back to the host every few tokens; the answer-token check
  (teacher forcing of the reference answers) continues the prefill's state, so each prompt is read
  once. On a CPU ``generate`` with the dynamic cache, so both rows there time the same path.
- dynamic: every ``generate`` call is handed a fresh dynamic ``HybridCache``, which keeps the eager
  step (the path of CPU and beam search, and of CUDA before the static cache), and the answer-token
  check reads each prompt again in a forward of its own.

Before the timed runs, ``--warmup-samples`` samples per task (default: one batch) go through both
paths (Triton kernels compile then, as they are cached on disk between ``hybrid ruler`` runs); the captured caches are then
dropped, so the timed static run pays its graph captures as a ``hybrid ruler`` run does.

Reported per path: seconds of the whole evaluation and of the generation inside it (``generate``
calls), generated tokens (up to each row's end-of-text), ms per generated token, the cache each
``generate`` call decoded through; then the speed-ups, and whether the two paths generated the same
tokens, row by row (greedy decoding: a mismatch is a numerical difference between the two steps).

    PYTHONPATH=. python3 benchmarks/ruler_eval.py --json out/ruler-eval.json
    PYTHONPATH=. python3 benchmarks/ruler_eval.py runs/model --samples 50 --tasks niah_single_1,vt

``--profile`` then runs one batch per task through the static path again under the torch profiler and
reports where its time goes: host seconds and CUDA ms of the prefill, the teacher-forced answer check
and the greedy steps (the phases ``greedy_decode`` names), and the kernels with the most CUDA time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

# run as a script, this folder comes first on sys.path, and its kernels.py would shadow the `kernels`
# package that transformers imports
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import torch  # noqa: E402

TASKS = "niah_single_1,niah_multikey_1,vt"
PATHS = {"static": "as `hybrid ruler` decodes (on CUDA: static cache, CUDA graph, greedy loop)",
         "dynamic": "generate given a dynamic HybridCache (eager: the path before)"}


class RecordingModel:
    """The model as ``evaluate`` sees it, with its ``generate`` calls recorded: the tokens each row
    generated (up to end-of-text) and the cache each call decoded through. With ``dynamic`` every call
    is handed a fresh ``HybridCache``, which keeps ``generate`` off the static cache."""

    def __init__(self, model, *, dynamic: bool, eos: int | None):
        self.model, self.dynamic, self.eos = model, dynamic, eos
        self.rows: list[list[int]] = []
        self.caches: Counter = Counter()

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def parameters(self, *args, **kwargs):
        return self.model.parameters(*args, **kwargs)

    def greedy_new_tokens(self, input_ids, attention_mask=None, **kwargs):
        """The static path's loop (None on the dynamic path and on a CPU, where ``generate`` serves)."""
        if self.dynamic:
            return None
        got = self.model.greedy_new_tokens(input_ids, attention_mask, **kwargs)
        if got is not None:
            self.caches["StaticHybridCache + CUDA graph, greedy loop"] += 1
            self._record(got[0] if isinstance(got, tuple) else got)
        return got

    def _record(self, new):
        for row in new.tolist():
            if self.eos is not None and self.eos in row:
                row = row[: row.index(self.eos)]
            self.rows.append(row)

    def generate(self, input_ids=None, **kwargs):
        from hybrid.blocks import HybridCache
        from hybrid.blocks.model import _CACHE_FIELD

        if self.dynamic:
            kwargs[_CACHE_FIELD] = HybridCache(self.model.config)
        out = self.model.generate(input_ids=input_ids, return_dict_in_generate=True, **kwargs)
        cache = out["cache"] if "cache" in out else out.get("past_key_values")
        graph = getattr(cache, "step_fn", None) is not None
        self.caches[type(cache).__name__ + (" + CUDA graph" if graph else "")] += 1
        self._record(out.sequences[:, input_ids.shape[1]:])
        return out.sequences


def compare(a: list[list[int]], b: list[list[int]], labels: list[str] | None = None) -> dict:
    """Row-by-row agreement of two paths' generated tokens: rows, mismatched rows, the tokens before each
    row's first difference, and the first few mismatches (label, position of the first difference)."""
    if len(a) != len(b):
        raise ValueError(f"the two paths generated {len(a)} and {len(b)} rows")
    mism, agree, total = [], 0, 0
    for i, (x, y) in enumerate(zip(a, b)):
        n = max(len(x), len(y))
        first = next((j for j in range(n) if j >= len(x) or j >= len(y) or x[j] != y[j]), None)
        total += n
        agree += n if first is None else first
        if first is not None:
            mism.append({"row": labels[i] if labels else i, "first_difference": first, "tokens": [len(x), len(y)]})
    return {"rows": len(a), "mismatched_rows": len(mism), "tokens_before_first_difference": agree,
            "tokens": total, "mismatches": mism[:20]}


def load_model(source: str, pattern: str | None, device: torch.device, dtype: str):
    """(model, tokenizer, description) of a recipe (random weights, seed 0) or a trained model folder."""
    is_recipe = Path(source).suffix in (".yaml", ".yml")
    if not is_recipe and pattern:
        sys.exit("error: --pattern re-lays out a recipe; a trained model keeps its own layout")
    if dtype == "auto":
        dtype = "bf16" if device.type == "cuda" else "fp32"
    if not is_recipe:
        from hybrid.eval.ruler.checkpoint import load_checkpoint
        from hybrid.tasks.errors import RulerError

        try:
            model, tok, _ = load_checkpoint(source, str(device), dtype)
        except RulerError as e:
            sys.exit(f"error: {e}")
        return model, tok, {"source": source, "weights": "trained", "dtype": dtype}
    from hybrid.blocks import HybridConfig, HybridForCausalLM
    from hybrid.recipes import RecipeError, load_recipe
    from hybrid.train.tokenizer import load_tokenizer

    try:
        rec = load_recipe(source, [f"layout.pattern={pattern}"] if pattern else [])
    except RecipeError as e:
        sys.exit(f"error: {e}")
    data = rec.train.get("data")
    tok = load_tokenizer(data.get("tokenizer") if isinstance(data, dict) else None)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if len(tok) > rec.model["vocab_size"]:
        sys.exit(f"error: the recipe's tokenizer has {len(tok)} tokens, its model a vocabulary of "
                 f"{rec.model['vocab_size']}")
    torch.manual_seed(0)
    model = HybridForCausalLM(HybridConfig(**rec.model_config_kwargs()))
    model = model.to(device=device, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32).eval()
    return model, tok, {"source": source, "weights": "random init (seed 0)", "recipe": rec.name,
                        "layout": rec.letters, "dtype": dtype}


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_path(model, tok, tasks, length, samples, *, batch_size, seed, dynamic, device) -> dict:
    from hybrid.eval.ruler.runner import evaluate

    rec = RecordingModel(model, dynamic=dynamic, eos=tok.eos_token_id)
    _sync(device)
    t0 = time.perf_counter()
    run = evaluate(rec, tok, tasks, [length], samples, batch_size=batch_size, seed=seed, progress=False)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "generation_seconds": run.gen_seconds, "generated_tokens": run.gen_tokens,
            "prompt_tokens": run.prompt_tokens,
            "ms_per_generated_token": 1000 * run.gen_seconds / max(run.gen_tokens, 1),
            "decode_caches": dict(rec.caches), "mean_score": run.mean(length),
            "scores": {t: run.scores[t][length] for t in tasks},
            "labels": [f"{p['task']}#{p['index']}" for p in run.predictions], "rows": rec.rows}


def time_samples(tok, tasks, length, samples, seed) -> float:
    """Seconds to make the samples, as each evaluation makes them (timed apart, once)."""
    from hybrid.eval.ruler.runner import make_samples

    t0 = time.perf_counter()
    make_samples(tasks, [length], samples, tok, seed=seed)
    return time.perf_counter() - t0


PHASES = ("greedy_decode.prefill", "greedy_decode.answer_check", "greedy_decode.steps")


def profile_static(model, tok, tasks, length, *, batch_size, seed, device, top=15) -> dict:
    """One batch per task through the static path under the torch profiler: per phase of greedy_decode
    the host seconds and the CUDA ms of the kernels it launched (a graph replay counts as its kernels),
    the whole run's host seconds, and the ``top`` kernels by CUDA time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        run_path(model, tok, tasks, length, batch_size, batch_size=batch_size, seed=seed, dynamic=False,
                 device=device)
        seconds = time.perf_counter() - t0
    phases, span, kernels = {}, {}, {}
    for e in prof.events():
        if e.device_type == DeviceType.CPU:
            if e.name in PHASES:  # the host range: its wall time and the GPU time of the kernels it launched
                p = phases.setdefault(e.name, {"calls": 0, "host_s": 0.0, "cuda_ms": 0.0})
                p["calls"] += 1
                p["host_s"] += e.time_range.elapsed_us() / 1e6
                p["cuda_ms"] += e.device_time_total / 1e3
        elif e.name in PHASES or getattr(e, "is_user_annotation", False):  # a range drawn on the GPU timeline
            span[e.name] = span.get(e.name, 0.0) + e.time_range.elapsed_us() / 1e3
        else:  # a kernel, copy or fill: [CUDA ms, calls]
            k = kernels.setdefault(e.name, [0.0, 0])
            k[0] += e.time_range.elapsed_us() / 1e3
            k[1] += 1
    for name, p in phases.items():  # where the kernels were not linked to their host range, the GPU span
        if p["cuda_ms"] == 0 and name in span:
            p["cuda_ms"] = span[name]
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    return {"batches": len(tasks), "seconds": seconds, "phases": phases,
            "kernels": [{"name": n[:100], "calls": calls, "cuda_ms": ms} for n, (ms, calls) in ranked]}


def profile_markdown(p: dict) -> str:
    lines = [f"profile of the static path, one batch per task ({p['batches']} batches, {p['seconds']:.2f} s "
             "under the profiler):", "", "| phase | calls | host s | CUDA ms |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {k.split('.')[-1]} | {v['calls']} | {v['host_s']:.3f} | {v['cuda_ms']:.1f} |"
              for k, v in p["phases"].items()]
    lines += ["", "| kernel | calls | CUDA ms |", "| --- | ---: | ---: |"]
    lines += [f"| {k['name']} | {k['calls']} | {k['cuda_ms']:.1f} |" for k in p["kernels"]]
    return "\n".join(lines)


def markdown(res: dict) -> str:
    m, p = res["model"], res["paths"]
    what = (f"{m.get('recipe', m['source'])} ({m['layout']}, {m['weights']})" if "recipe" in m
            else f"{m['source']} ({m['weights']})")
    lines = [f"RULER evaluation of {what} on {res['device']}, {m['dtype']}: {', '.join(res['tasks'])}, "
             f"{res['samples']} samples each at {res['length']} tokens, batch {res['batch_size']}", "",
             "| decode path | evaluation (s) | generation (s) | generated tokens | ms per generated token | "
             "cache per generate call |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for key in ("dynamic", "static"):
        q = p[key]
        caches = ", ".join(f"{k} x{v}" for k, v in q["decode_caches"].items())
        lines.append(f"| {PATHS[key]} | {q['seconds']:.2f} | {q['generation_seconds']:.2f} | "
                     f"{q['generated_tokens']} | {q['ms_per_generated_token']:.2f} | {caches} |")
    s, g = res["speedup"], res["generations"]
    lines += ["", f"each evaluation also makes its samples ({res['samples_seconds']:.2f} s, timed apart) and "
                  "runs the teacher-forced answer-token check and the scoring; generation is the model's "
                  "generate calls, prefill included",
              f"speed-up of the static path: {s['evaluation']:.2f}x on the evaluation, {s['generation']:.2f}x "
                  f"on the generation; generations: {g['mismatched_rows']} of {g['rows']} rows differ "
                  f"({g['tokens_before_first_difference']} of {g['tokens']} tokens before a row's first difference)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default="recipes/carve-350m-3to1.yaml",
                    help="a recipe (.yaml: random weights, its tokenizer) or a model folder written by "
                         "`hybrid train` (default: %(default)s)")
    ap.add_argument("--pattern", default=None, help="re-lay out the recipe with this block pattern, e.g. A or C")
    ap.add_argument("--tasks", default=TASKS, help="RULER tasks or groups, comma separated (default: %(default)s)")
    ap.add_argument("--samples", type=int, default=20, help="samples per task (default: %(default)s)")
    ap.add_argument("--length", type=int, default=4096, help="target length in tokens (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=8, help="prompts decoded together (default: %(default)s)")
    ap.add_argument("--warmup-samples", type=int, default=None,
                    help="untimed samples per task through both paths first (default: --batch-size, so that "
                         "the kernels see the timed batch shape)")
    ap.add_argument("--seed", type=int, default=0, help="evaluation seed (default: %(default)s)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"),
                    help="model dtype (auto: bf16 on CUDA, fp32 on CPU, as `hybrid ruler`)")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the results here")
    ap.add_argument("--profile", action="store_true",
                    help="then profile one batch per task of the static path: time per phase, top kernels")
    args = ap.parse_args(argv)
    for flag in ("samples", "length", "batch_size"):
        if getattr(args, flag) < 1:
            sys.exit(f"error: --{flag.replace('_', '-')} must be >= 1")
    if args.warmup_samples is None:
        args.warmup_samples = args.batch_size
    if args.warmup_samples < 0:
        sys.exit("error: --warmup-samples must be >= 0")
    from hybrid.blocks.decode_graph import release_decode_caches
    from hybrid.tasks import RulerError, resolve_tasks

    try:
        tasks = resolve_tasks(args.tasks)
    except RulerError as e:
        sys.exit(f"error: {e}")
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA device here")
    model, tok, about = load_model(args.model, args.pattern, dev, args.dtype)
    about.setdefault("layout", "".join(b["kind"][0].upper() for b in model.config.layers))
    about["params"] = sum(p.numel() for p in model.parameters())

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    common = dict(batch_size=args.batch_size, seed=args.seed, device=dev)
    try:
        if args.warmup_samples:
            log(f"warm-up: {args.warmup_samples} sample(s) per task through both paths")
            for dynamic in (True, False):
                run_path(model, tok, tasks, args.length, args.warmup_samples, dynamic=dynamic, **common)
        paths = {}
        for key in ("static", "dynamic"):
            release_decode_caches(model)
            paths[key] = run_path(model, tok, tasks, args.length, args.samples, dynamic=key == "dynamic", **common)
            q = paths[key]
            log(f"{PATHS[key]}: {q['seconds']:.2f} s ({q['generation_seconds']:.2f} s generating "
                f"{q['generated_tokens']} tokens)")
    except RulerError as e:
        sys.exit(f"error: {e}")
    samples_seconds = time_samples(tok, tasks, args.length, args.samples, args.seed)
    generations = compare(paths["dynamic"].pop("rows"), paths["static"].pop("rows"), paths["dynamic"]["labels"])
    for q in paths.values():
        q.pop("labels")
    res = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
           "torch": torch.__version__, "model": about, "tasks": tasks, "length": args.length,
           "samples": args.samples, "batch_size": args.batch_size, "seed": args.seed,
           "warmup_samples": args.warmup_samples, "samples_seconds": samples_seconds, "paths": paths,
           "speedup": {"evaluation": paths["dynamic"]["seconds"] / paths["static"]["seconds"],
                       "generation": paths["dynamic"]["generation_seconds"]
                       / max(paths["static"]["generation_seconds"], 1e-9)},
           "generations": generations}
    res["markdown"] = markdown(res)
    print(res["markdown"])
    if args.profile:
        res["profile"] = profile_static(model, tok, tasks, args.length, batch_size=args.batch_size, seed=args.seed,
                                        device=dev)
        print("\n" + profile_markdown(res["profile"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
