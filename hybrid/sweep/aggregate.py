"""Per-seed sweep results grouped by variant: scores, means over the trained-format tasks and over the
held-out ones, Wilson intervals, costs, and what the recurrent layers are (for the ablation table)."""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict

from hybrid.eval.ruler.intervals import wilson
from hybrid.eval.ruler.report import HELD_OUT_MARK, count_label


def ms(values: list[float]) -> tuple[float, float]:
    """Mean and standard deviation (0 for one value; NaN, NaN for none)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def cell_samples(v: dict, mean: bool = False, length: int | None = None, held_out: bool = False) -> int | None:
    """How many scored samples stand behind one cell of variant ``v`` (all seeds pooled; for a mean, x the
    tasks behind it); None when the results do not say how many samples a cell had."""
    if not v.get("samples"):
        return None
    k = 1
    if mean:
        counts = v["held_out_tasks_at" if held_out else "mean_tasks_at"]
        k = counts.get(str(length), 0) if length is not None else max(counts.values(), default=0)
    return v["samples"] * len(v["seeds"]) * k if k else None


def interval(v: dict, task: str | None, length: int, held_out: bool = False) -> tuple[float, float] | None:
    """The 95% Wilson interval of a task's (or, with ``task=None``, the mean's) score at ``length``."""
    n = cell_samples(v, mean=task is None, length=length, held_out=held_out)
    if task is None:
        vals = v["held_out_mean" if held_out else "mean"].get(str(length), [])
    else:
        vals = v["scores"][task].get(str(length), [])
    m = ms(vals)[0]
    if n is None or math.isnan(m):
        return None
    return wilson(m, n)


def recurrent_mixer_of(result: dict) -> str | None:
    """``recurrent_mixer`` of a result; for results written before it existed, from ``layer_types``
    (the content setting was not recorded then: CARVE counts as content on)."""
    if "recurrent_mixer" in result:
        return result["recurrent_mixer"]
    kinds = {k for k in result.get("layer_types", []) if k != "attention"}
    return (kinds.pop() if len(kinds) == 1 else "mixed") if kinds else None


def _means(r: dict, tasks: list[str], lengths: list[int]) -> dict[str, float]:
    """Per length, the unweighted mean of the scores of ``tasks`` that this run scored there."""
    out = {}
    for n in lengths:
        vals = [r["ruler"]["scores"][t][str(n)] for t in tasks if str(n) in r["ruler"]["scores"].get(t, {})]
        out[str(n)] = statistics.fmean(vals) if vals else float("nan")
    return out


def aggregate(results: list[dict]) -> list[dict]:
    """Group the per-seed results by variant; lists over seeds per cell."""
    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for r in results:
        groups.setdefault(r["name"], []).append(r)
    out = []
    for name, rs in groups.items():
        first = rs[0]
        lengths = first["lengths"]
        tasks = first["ruler"]["tasks"]
        held = [t for t in first["ruler"].get("held_out", []) if t in tasks]
        trained = [t for t in tasks if t not in held]

        def per_seed(key, t, n, runs=rs):
            return [r["ruler"][key][t][str(n)] for r in runs if str(n) in r["ruler"].get(key, {}).get(t, {})]

        scores = {t: {str(n): per_seed("scores", t, n) for n in lengths} for t in tasks}
        seed_means = [_means(r, trained, lengths) for r in rs]
        held_means = [_means(r, held, lengths) for r in rs] if held else []
        v = {
            "name": name, "variant": first["variant"], "layout": first["layout"], "n_layers": first["n_layers"],
            "attention_layers": first["attention_layers"], "attention_share": first["attention_share"],
            "recurrent_mixer": recurrent_mixer_of(first),
            "params": first["params"], "seeds": [r["seed"] for r in rs], "train_length": first["train_length"],
            "lengths": lengths, "tasks": tasks, "trained_tasks": trained, "held_out": held, "scores": scores,
            "mean": {str(n): [m[str(n)] for m in seed_means] for n in lengths},
            "held_out_mean": {str(n): [m[str(n)] for m in held_means] for n in lengths} if held else {},
            "mean_tasks_at": {str(n): sum(bool(scores[t][str(n)]) for t in trained) for n in lengths},
            "held_out_tasks_at": {str(n): sum(bool(scores[t][str(n)]) for t in held) for n in lengths},
            "answer_token_acc": {t: {str(n): per_seed("answer_token_acc", t, n) for n in lengths} for t in tasks},
            # every sample's score in [0, 1], per seed (empty for results written before they were kept)
            "sample_scores": {t: {str(n): per_seed("sample_scores", t, n) for n in lengths} for t in tasks},
            "shape": first["ruler"].get("shape", {}), "skipped": first["ruler"].get("skipped", {}),
            # steady rate (start-up left out) where the run has it, else the whole-run average
            "train_tokens_per_s": [r["train"].get("steady_tokens_per_s") or r["train"]["tokens_per_s"] for r in rs],
            "train_tokens_per_s_whole_run": [r["train"]["tokens_per_s"] for r in rs],
            "train_final_loss": [r["train"]["final_loss"] for r in rs],
            "answer_acc_curves": [r["train"].get("answer_acc_curve") or [] for r in rs],
            "train_wall_s": [r["train"]["wall_time_s"] for r in rs],
            "decode_ms_per_token": [r["decode"]["ms_per_token"] for r in rs],
            "decode_context": first["decode"]["context"], "analytic": first["analytic"],
            "ruler_like_tasks": first["ruler"].get("ruler_like_tasks", []), "haystack": first["ruler"].get("haystack"),
            "device": first.get("device"),
            # samples per (task, length) cell in one seed's evaluation; "mean" is the unweighted mean of the
            # n_tasks trained-format task scores at one length
            "samples": first["ruler"].get("samples"), "n_tasks": len(trained),
        }
        v["intervals95"] = {
            "scores": {t: {str(n): interval(v, t, n) for n in lengths} for t in tasks},
            "mean": {str(n): interval(v, None, n) for n in lengths},
            **({"held_out_mean": {str(n): interval(v, None, n, True) for n in lengths}} if held else {})}
        out.append(v)
    return out


def task_name(v: dict, t: str) -> str:
    """A task's name in the report: * for the RULER-like (essay) tasks, the held-out mark."""
    return t + (" *" if t in v["ruler_like_tasks"] else "") + (f" {HELD_OUT_MARK}" if t in v["held_out"] else "")


def mean_label(v: dict, held_out: bool = False) -> str:
    """"mean of N tasks" (or "mean of the tasks that fit (a/b/c)" when the count changes with the length)."""
    counts = list((v["held_out_tasks_at"] if held_out else v["mean_tasks_at"]).values())
    return count_label(counts, f"held-out {HELD_OUT_MARK} mean" if held_out else "mean")
