"""One report for a sweep: markdown + JSON + plots (score vs attention share per length, score vs cost)."""

from __future__ import annotations

import json
import math
import statistics
from collections import OrderedDict
from pathlib import Path

from hybrid.eval.ruler.intervals import fmt_interval, wilson

TRAINED_ON_TEST_FORMAT = (
    "**Trained on the test format**: every model here was trained on samples from the same generators and "
    "templates it is scored on (with seeds disjoint from the evaluation seeds), so a score measures how well a "
    "variant learned this format, not transfer to unseen tasks.")

CI_NOTE = ("`[lo, hi]`: 95% Wilson interval of the score, a binomial proportion over the samples behind the cell "
           "(samples per cell x seeds; for a mean, also x tasks). It covers sampling noise of the evaluation only, "
           "not seed-to-seed variation (the ± spread).")


def _ms(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _pm(values: list[float], spread: bool, n: int | None = None) -> str:
    """Mean (± std over seeds when ``spread``), then the Wilson interval over ``n`` samples when known."""
    m, s = _ms(values)
    if math.isnan(m):
        return "-"
    text = f"{m:.1f} ± {s:.1f}" if spread else f"{m:.1f}"
    return text + (f" {fmt_interval(*wilson(m, n))}" if n else "")


def cell_samples(v: dict, mean: bool = False) -> int | None:
    """How many scored samples stand behind one cell of variant ``v`` (all seeds pooled); None when the
    results do not say how many samples a cell had."""
    if not v.get("samples"):
        return None
    return v["samples"] * len(v["seeds"]) * (len(v["tasks"]) if mean else 1)


def interval(v: dict, task: str | None, length: int) -> tuple[float, float] | None:
    """The 95% Wilson interval of a task's (or, with ``task=None``, the mean's) score at ``length``."""
    n = cell_samples(v, mean=task is None)
    vals = v["mean"][str(length)] if task is None else v["scores"][task][str(length)]
    m = _ms(vals)[0]
    if n is None or math.isnan(m):
        return None
    return wilson(m, n)


def _intervals(v: dict) -> dict:
    return {"scores": {t: {str(n): interval(v, t, n) for n in v["lengths"]} for t in v["tasks"]},
            "mean": {str(n): interval(v, None, n) for n in v["lengths"]}}


def aggregate(results: list[dict]) -> list[dict]:
    """Group the per-seed results by variant; means and standard deviations over seeds."""
    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for r in results:
        groups.setdefault(r["name"], []).append(r)
    out = []
    for name, rs in groups.items():
        first = rs[0]
        lengths = first["lengths"]
        tasks = first["ruler"]["tasks"]
        scores = {t: {str(n): [r["ruler"]["scores"][t][str(n)] for r in rs] for n in lengths} for t in tasks}
        means = {str(n): [r["ruler"]["mean"][str(n)] for r in rs] for n in lengths}
        tf = {t: {str(n): [r["ruler"]["answer_token_acc"][t][str(n)] for r in rs
                           if str(n) in r["ruler"].get("answer_token_acc", {}).get(t, {})]
                  for n in lengths} for t in tasks}
        out.append({
            "name": name, "variant": first["variant"], "layout": first["layout"], "n_layers": first["n_layers"],
            "attention_layers": first["attention_layers"], "attention_share": first["attention_share"],
            "params": first["params"], "seeds": [r["seed"] for r in rs], "train_length": first["train_length"],
            "lengths": lengths, "tasks": tasks, "scores": scores, "mean": means, "answer_token_acc": tf,
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
            # samples per (task, length) cell in one seed's evaluation; "mean" is the unweighted mean of
            # these n_tasks task scores at one length
            "samples": first["ruler"].get("samples"), "n_tasks": len(tasks),
        })
        out[-1]["intervals95"] = _intervals(out[-1])
    return out


def largest_gap(variants: list[dict]) -> dict | None:
    """The (task, length) where the variants' mean scores differ most, with the two scores' 95% Wilson
    intervals and whether the difference exceeds them (the intervals do not overlap); ``exceeds_intervals``
    is None when the results do not say how many samples a cell had."""
    best = None
    if len(variants) < 2:
        return None
    for t in variants[0]["tasks"]:
        for n in variants[0]["lengths"]:
            vals = [(_ms(v["scores"][t][str(n)])[0], v["name"]) for v in variants]
            vals = [x for x in vals if not math.isnan(x[0])]
            if len(vals) < 2:
                continue
            hi, lo = max(vals), min(vals)
            if best is None or hi[0] - lo[0] > best["gap"]:
                best = {"task": t, "length": n, "gap": hi[0] - lo[0], "best": hi[1], "best_score": hi[0],
                        "worst": lo[1], "worst_score": lo[0]}
    if best is not None:
        by_name = {v["name"]: v for v in variants}
        hi_ci = interval(by_name[best["best"]], best["task"], best["length"])
        lo_ci = interval(by_name[best["worst"]], best["task"], best["length"])
        best["best_interval95"], best["worst_interval95"] = hi_ci, lo_ci
        best["exceeds_intervals"] = None if hi_ci is None or lo_ci is None else hi_ci[0] > lo_ci[1]
    return best


def plot_score_vs_ratio(variants: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean_label = f"mean of {variants[0]['n_tasks']} tasks"
    tasks = variants[0]["tasks"] + [mean_label]
    lengths = variants[0]["lengths"]
    train = variants[0]["train_length"]
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    order = sorted(variants, key=lambda v: v["attention_share"])
    for k, t in enumerate(tasks):
        ax = axes[k // cols][k % cols]
        for j, n in enumerate(lengths):
            xs, ys, es = [], [], []
            for v in order:
                vals = v["mean"][str(n)] if t == mean_label else v["scores"][t][str(n)]
                m, s = _ms(vals)
                xs.append(v["attention_share"])
                ys.append(m)
                es.append(s)
            label = f"{n} ({n / train:g}x)" if train else str(n)
            ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=3, lw=1.2, label=label, color=f"C{j}")
        ax.set_title(t + (" *" if t in variants[0]["ruler_like_tasks"] else ""), fontsize=9)
        ax.set_ylim(-3, 103)
        ax.set_xlabel("attention share of layers")
        ax.set_ylabel("score (x100)")
        ax.grid(alpha=0.3)
    for k in range(len(tasks), rows * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(title="eval length", fontsize=7, title_fontsize=7)
    seeds = len(variants[0]["seeds"])
    fig.suptitle(f"RULER score vs attention share ({seeds} seed{'s' if seeds > 1 else ''}; bars: std over seeds; "
                 "same-share variants are separate points)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_frontier(variants: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = str(variants[0]["lengths"][-1])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "decode_ms_per_token", f"decode ms per token at {variants[0]['decode_context']} "
                            "context (measured, batch 1)"),
                           (axes[1], "train_tokens_per_s", "training tokens/s (measured)")):
        for i, v in enumerate(variants):
            x, xs = _ms(v[key])
            y, ys = _ms(v["mean"][longest])
            ax.errorbar([x], [y], xerr=[xs], yerr=[ys], marker="o", color=f"C{i % 10}", capsize=3)
            text = v["name"] if v["layout"] in v["name"] else f"{v['name']}\n{v['layout']}"
            # staggered heights, so variants with close costs and scores keep readable labels
            ax.annotate(text, (x, y), fontsize=6, xytext=(4, 4 + 9 * (i % 3)), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylim(-3, 103)
        ax.set_ylabel(f"mean of {variants[0]['n_tasks']} RULER task scores at {longest} tokens")
        ax.grid(alpha=0.3)
    axes[0].set_title("quality vs decoding cost (up-left is better)", fontsize=9)
    axes[1].set_title("quality vs training throughput (up-right is better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_learning(ax, series) -> None:
    """Answer-token accuracy curves on ``ax``: ``series`` of (label or None, color, [[step, acc], ...])."""
    for label, color, curve in series:
        steps, acc = zip(*curve)
        ax.plot(steps, [100 * a for a in acc], "o-", ms=3, lw=1.2, color=color, label=label)
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)


def plot_learning(variants: list[dict], path: Path) -> Path | None:
    """Held-out answer-token accuracy during training, one line per variant (and seed): when (and whether)
    each variant learned to retrieve. None when no run logged it."""
    if not any(c for v in variants for c in v["answer_acc_curves"]):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    draw_learning(ax, [(f"{v['name']} ({v['layout']})" if j == 0 else None, f"C{i % 10}", c)
                       for i, v in enumerate(variants)
                       for j, c in enumerate(c for c in v["answer_acc_curves"] if c)])
    ax.set_ylabel("held-out answer-token accuracy (%)")
    ax.set_ylim(0, 102)
    ax.set_title("learning to retrieve: next-token accuracy on the answers of held-out training documents",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(b) < 1024:
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TB"


def _fmt_flops(f: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if f >= scale:
            return f"{f / scale:.2f} {unit}"
    return f"{f:.0f}"


def markdown(variants: list[dict], meta: dict) -> str:
    v0 = variants[0]
    lengths, tasks, train = v0["lengths"], v0["tasks"], v0["train_length"]
    spread = any(len(v["seeds"]) > 1 for v in variants)
    ruler_like = bool(v0["ruler_like_tasks"])
    L = [f"# Hybrid-ratio sweep: {meta.get('name', '')}", ""]
    L.append(f"Sweep file `{meta.get('sweep')}`; {len(variants)} variants x {len(v0['seeds'])} seed(s); trained at "
             f"{train} tokens on the RULER-format mixture, evaluated at {', '.join(map(str, lengths))} tokens "
             f"({', '.join(f'{n / train:g}x' for n in lengths)}); device {v0.get('device')}.")
    L.append("")
    L.append(TRAINED_ON_TEST_FORMAT)
    L.append("")
    if ruler_like:
        L.append(f"**RULER-like**: tasks marked * ({', '.join(v0['ruler_like_tasks'])}) use the essay haystack "
                 f"{v0['haystack']}, not Paul Graham's essays; their scores are not comparable with published RULER "
                 "numbers.")
        L.append("")
    L.append("## Summary")
    L.append("")
    n_tasks = v0["n_tasks"]
    with_ci = any(v.get("samples") for v in variants)
    L.append(f"Scores are x100. `mean of {n_tasks} tasks`: the unweighted mean of the {n_tasks} task scores at "
             f"one length ({', '.join(tasks)}), not RULER's 13-task average.")
    L.append("")
    if with_ci:
        L.append(CI_NOTE)
        L.append("")
    head = ["variant", "layout", "attn share"] + [f"mean of {n_tasks} tasks @{n}" for n in lengths] + [
        "train tok/s", f"decode ms/tok @{v0['decode_context']}", "params", f"pred. cache @{lengths[-1]}",
        f"pred. decode FLOP/tok @{lengths[-1]}"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for v in variants:
        a = v["analytic"].get("by_length", {}).get(str(lengths[-1]), {})
        cache = _fmt_bytes(a["cache_bytes"]) if "cache_bytes" in a else "-"
        dfl = _fmt_flops(a["decode_flops_per_token"]) if "decode_flops_per_token" in a else "-"
        tps = _ms(v["train_tokens_per_s"])[0]
        dms = _ms(v["decode_ms_per_token"])[0]
        row = [v["name"], f"`{v['layout']}`", f"{v['attention_share']:.3f}"]
        row += [_pm(v["mean"][str(n)], spread, cell_samples(v, mean=True)) for n in lengths]
        row += [f"{tps:,.0f}", f"{dms:.2f}", f"{v['params'] / 1e6:.2f}M", cache, dfl]
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    gap = largest_gap(variants)
    if gap and gap["gap"] == 0:
        L.append("No difference between variants: every variant has the same score in every (task, length) cell.")
        L.append("")
    elif gap:
        where = (f"**{gap['task']} at {gap['length']} tokens** ({gap['length'] / train:g}x the training length): "
                 f"{gap['best']} scores {gap['best_score']:.1f}, {gap['worst']} scores {gap['worst_score']:.1f}")
        if gap["exceeds_intervals"] is None:
            L.append(f"Largest difference between variants: {where} (no sample counts in the results, so no "
                     "interval says whether it exceeds the evaluation noise).")
        else:
            cis = " and ".join("[{:.1f}, {:.1f}]".format(*gap[k]) for k in ("best_interval95", "worst_interval95"))
            if gap["exceeds_intervals"]:
                L.append(f"Largest difference between variants: {where}; it exceeds their 95% intervals {cis}, "
                         "which do not overlap.")
            else:
                L.append("No difference between variants exceeds the 95% intervals: even the largest, "
                         f"{where}, has overlapping intervals {cis}.")
        L.append("")
    L.append("How to read it: a recurrent layer keeps a fixed-size state whatever the length (the `pred. cache` of "
             "an all-recurrent model does not grow), so it must compress every key-value pair it may be asked "
             "about; an attention layer keeps every token in its KV cache and looks the pair up. Tasks whose number "
             "of distinct facts grows with the length (niah_multikey_2/3: every haystack line is a needle) are "
             "where this should show, more at 2x and 4x the training length; a passkey in repeated noise "
             "(niah_single_1) costs a state almost nothing. Models trained at one length can also fail to "
             "extrapolate (RoPE attention beyond its training positions), which the 1x column separates from "
             "retrieval failures. These are expectations; the tables above are the measurement.")
    L.append("")
    if not spread:
        L.append("One seed per variant: a small model learns retrieval suddenly, at a step that varies from run to "
                 "run (and some runs of a variant that can learn it do not within the budget), so a ranking of "
                 "two variants with similar scores may not repeat. `--seeds N` trains every variant N times and "
                 "shows mean ± std.")
        L.append("")
    L.append("## Scores per task and length" + (" (mean ± std over seeds)" if spread else ""))
    L.append("")
    head = ["variant"] + [f"{t}{' *' if t in v0['ruler_like_tasks'] else ''} @{n}" for t in tasks for n in lengths]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for v in variants:
        L.append("| " + " | ".join([v["name"]] + [_pm(v["scores"][t][str(n)], spread, cell_samples(v))
                                                   for t in tasks for n in lengths]) + " |")
    L.append("")
    L += per_length_tables(variants, spread)
    if any(v.get("answer_token_acc", {}).get(t, {}).get(str(n)) for v in variants for t in tasks for n in lengths):
        L.append("## Teacher-forced answer-token accuracy (%)" + (" (mean ± std over seeds)" if spread else ""))
        L.append("")
        L.append("The model reads the prompt and the correct answer; the share of the answer's word and number "
                 "tokens it predicts exactly. A graded signal under the all-or-nothing scores above: it shows a "
                 "variant that copies part of a value, or finds the needle but not the whole answer.")
        L.append("")
        L.append("| " + " | ".join(head) + " |")
        L.append("|" + "---|" * len(head))
        for v in variants:
            acc = v.get("answer_token_acc", {})
            cells = [_pm(acc.get(t, {}).get(str(n), []), spread) for t in tasks for n in lengths]
            L.append("| " + " | ".join([v["name"]] + cells) + " |")
        L.append("")
    L.append("## Plots")
    L.append("")
    L.append("![score vs attention share](score_vs_ratio.png)")
    L.append("")
    L.append("![score vs cost](frontier.png)")
    L.append("")
    if any(c for v in variants for c in v["answer_acc_curves"]):
        L.append("![learning to retrieve](learning.png)")
        L.append("")
        L.append("Held-out answer-token accuracy during training (`train.eval_every`): the fraction of answer "
                 "tokens of held-out training documents predicted right, teacher-forced. Retrieval is learned "
                 "suddenly; the step where a variant's curve jumps is when it learned to copy the needle.")
        L.append("")
    L.append("Costs: training tokens/s (the median over logged windows after the first two, so kernel compilation "
             "and data-worker start-up are left out; `report.json` also has the whole-run average) and decode ms "
             "per token are measured on the device above (decode: greedy, "
             f"batch 1, at {v0['decode_context']} tokens of context). `pred.` columns come from `hybrid.analytic` "
             "(cache = recurrent states + KV cache in bf16, batch 1).")
    L.append("")
    return "\n".join(L)


def per_length_tables(variants: list[dict], spread: bool) -> list[str]:
    """RULER's layout, one table per variant: tasks x lengths, the average of the tasks per length last."""
    v0 = variants[0]
    L = [f"## RULER table per variant (tasks x lengths, average of {v0['n_tasks']} tasks per length)", ""]
    for v in variants:
        L.append(f"**{v['name']}** (`{v['layout']}`)")
        L.append("")
        L.append("| task | " + " | ".join(f"{n} ({n / v['train_length']:g}x)" for n in v["lengths"]) + " |")
        L.append("|" + "---|" * (len(v["lengths"]) + 1))
        for t in v["tasks"]:
            name = t + (" *" if t in v["ruler_like_tasks"] else "")
            L.append("| " + " | ".join([name] + [_pm(v["scores"][t][str(n)], spread, cell_samples(v))
                                               for n in v["lengths"]]) + " |")
        L.append("| " + " | ".join([f"**average of {v['n_tasks']} tasks**"]
                                   + [_pm(v["mean"][str(n)], spread, cell_samples(v, mean=True))
                                      for n in v["lengths"]]) + " |")
        L.append("")
    return L


def write_report(results: list[dict], out: str | Path, meta: dict) -> dict[str, Path]:
    out = Path(out)
    variants = aggregate(results)
    if not variants:
        raise ValueError("no finished runs to report")
    paths = {"md": out / "report.md", "json": out / "report.json", "ratio_png": out / "score_vs_ratio.png",
             "frontier_png": out / "frontier.png"}
    try:
        plot_score_vs_ratio(variants, paths["ratio_png"])
        plot_frontier(variants, paths["frontier_png"])
        if plot_learning(variants, out / "learning.png"):
            paths["learning_png"] = out / "learning.png"
    except ImportError as e:  # matplotlib missing (e.g. a bare GPU box): tables and JSON still get written
        meta = dict(meta, plots_skipped=f"{e}; pip install matplotlib and re-run with --resume to draw them")
        paths.pop("ratio_png")
        paths.pop("frontier_png")
    text = markdown(variants, meta)
    if "plots_skipped" in meta:
        text += f"\nPlots skipped: {meta['plots_skipped']}\n"
    if meta.get("in_progress"):
        text += f"\n**Partial report**: {meta['in_progress']}.\n"
    if meta.get("not_run (time budget)"):
        text += ("\nNot run (time budget reached; `--resume` adds them): "
                 + ", ".join(meta["not_run (time budget)"]) + "\n")
    paths["md"].write_text(text)
    keys = {"mean": "per length, the unweighted mean of the variant's n_tasks task scores (x100), averaged "
                    "over seeds",
            "intervals95": "95% Wilson intervals [lo, hi] (x100) over samples x seeds (x n_tasks for the mean)",
            "samples": "samples per (task, length) cell in one seed's evaluation",
            "caveat": TRAINED_ON_TEST_FORMAT.replace("**", "")}
    paths["json"].write_text(json.dumps({"meta": meta, "keys": keys, "largest_gap": largest_gap(variants),
                                         "variants": variants}, indent=2, default=str))
    return paths
