"""One report for a sweep: markdown + JSON + plots. The tables are in ``tables.py``, the grouping over
seeds in ``aggregate.py``, the bootstrap in ``bootstrap.py`` and the plots in ``plots.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hybrid.eval.ruler.report import HELD_OUT_MARK

from . import tables
from .aggregate import aggregate, interval, mean_label, ms
from .plots import draw_learning, plot_frontier, plot_learning, plot_score_vs_ratio
from .tables import pm

__all__ = ["aggregate", "draw_learning", "largest_gap", "markdown", "write_report"]

TRAINED_ON_TEST_FORMAT = (
    "**Trained on the test format**: every model here was trained on samples from the same generators and "
    "templates it is scored on (with seeds disjoint from the evaluation seeds), so a score measures how well a "
    "variant learned this format, not transfer to unseen tasks.")
HELD_OUT_NOTE = (f"Tasks marked {HELD_OUT_MARK} are held out: evaluated but never in the training data; their "
                 "mean is reported apart and is the only score here that shows transfer.")
NO_HELD_OUT_NOTE = "No task is held out (`eval.held_out`), so nothing here measures transfer to an unseen task."

CI_NOTE = ("`[lo, hi]`: 95% Wilson interval of the score, a binomial proportion over the samples behind the cell "
           "(samples per cell x seeds; for a mean, also x tasks). It covers sampling noise of the evaluation only, "
           "not seed-to-seed variation (the ± spread).")
NEIGHBOUR_NOTE = (
    "Each cell: the difference (later share minus earlier share) of the mean of {n} tasks, x100, its 95% "
    "bootstrap interval over seeds x samples ({reps} replicates: seeds drawn with replacement, then each "
    "drawn seed's samples), and whether the interval excludes 0, i.e. whether the difference exceeds what "
    "the seed spread and the evaluation noise together can make.")


def largest_gap(variants: list[dict]) -> dict | None:
    """The (task, length) where the variants' mean scores differ most, with the two scores' 95% Wilson
    intervals and whether the difference exceeds them (the intervals do not overlap); ``exceeds_intervals``
    is None when the results do not say how many samples a cell had."""
    best = None
    if len(variants) < 2:
        return None
    for t in variants[0]["tasks"]:
        for n in variants[0]["lengths"]:
            vals = [(ms(v["scores"][t].get(str(n), []))[0], v["name"]) for v in variants]
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


def _gap_lines(variants: list[dict], train: int) -> list[str]:
    gap = largest_gap(variants)
    if gap and gap["gap"] == 0:
        return ["No difference between variants: every variant has the same score in every (task, length) cell.", ""]
    if not gap:
        return []
    where = (f"**{gap['task']} at {gap['length']} tokens** ({gap['length'] / train:g}x the training length): "
             f"{gap['best']} scores {gap['best_score']:.1f}, {gap['worst']} scores {gap['worst_score']:.1f}")
    if gap["exceeds_intervals"] is None:
        return [f"Largest difference between variants: {where} (no sample counts in the results, so no interval "
                "says whether it exceeds the evaluation noise).", ""]
    cis = " and ".join("[{:.1f}, {:.1f}]".format(*gap[k]) for k in ("best_interval95", "worst_interval95"))
    if gap["exceeds_intervals"]:
        return [f"Largest difference between variants: {where}; it exceeds their 95% intervals {cis}, which do "
                "not overlap (the largest of many cells: read the neighbouring-share table for the differences "
                "that matter).", ""]
    return ["No difference between variants exceeds the 95% intervals: even the largest, "
            f"{where}, has overlapping intervals {cis}.", ""]


def markdown(variants: list[dict], meta: dict, neighbour_rows: tuple | None = None,
             ablation_rows: tuple | None = None) -> str:
    from .bootstrap import REPLICATES

    v0 = variants[0]
    lengths, train = v0["lengths"], v0["train_length"]
    spread = any(len(v["seeds"]) > 1 for v in variants)
    seeds = sorted({s for v in variants for s in v["seeds"]})
    L = [f"# Hybrid-ratio sweep: {meta.get('name', '')}", ""]
    L.append(f"Sweep file `{meta.get('sweep')}`; {len(variants)} variants x {len(seeds)} training seed(s) "
             f"({', '.join(map(str, seeds))}; the evaluation samples are the same for every seed); trained at "
             f"{train} tokens, evaluated at {', '.join(map(str, lengths))} tokens "
             f"({', '.join(f'{n / train:g}x' for n in lengths)}), {v0.get('samples') or '?'} samples per task and "
             f"length; device {v0.get('device')}.")
    L += ["", TRAINED_ON_TEST_FORMAT + " " + (HELD_OUT_NOTE if v0["held_out"] else NO_HELD_OUT_NOTE), ""]
    if v0["ruler_like_tasks"]:
        L += [f"**RULER-like**: tasks marked * ({', '.join(v0['ruler_like_tasks'])}) use the essay haystack "
              f"{v0['haystack']}, not Paul Graham's essays; their scores are not comparable with published RULER "
              "numbers.", ""]
    L += ["## Summary", ""]
    trained = v0["trained_tasks"]
    L += [f"Scores are x100{' (mean ± std over seeds)' if spread else ''}. `{mean_label(v0)}`: the unweighted mean "
          f"of the task scores at one length ({', '.join(trained)}), not RULER's 13-task average.", ""]
    if any(v.get("samples") for v in variants):
        L += [CI_NOTE, ""]
    L += tables.summary(variants, spread)
    L += _gap_lines(variants, train)
    if not spread:
        L += ["One seed per variant: a small model learns retrieval suddenly, at a step that varies from run to "
              "run, so a ranking of two variants with similar scores may not repeat, and the intervals below "
              "cover the evaluation's sampling noise only. `sweep.seeds: [0, 1, 2]` (or `--seeds 0,1,2`) trains "
              "every variant once per seed.", ""]
    lines, _ = neighbour_rows if neighbour_rows is not None else tables.neighbours(variants)
    if lines:
        L += ["## Neighbouring attention shares: is the difference real?", ""]
        L += [NEIGHBOUR_NOTE.format(n=len(trained), reps=REPLICATES), ""] + lines
    lines, _ = ablation_rows if ablation_rows is not None else tables.ablation(variants, spread)
    if lines:
        L += ["## Ablation: the content gate", "",
              "The same layout with its recurrent layers as CARVE with the content signal on, CARVE with it off "
              "(`content: off`), and the GDN-2 layer (block kind `gdn2`), recognised from the recipes' blocks. "
              "`vs content on`: difference from content-on CARVE with its 95% bootstrap interval over seeds x "
              "samples, and whether it excludes 0.", ""] + lines
    L += [f"## RULER table per variant (tasks x lengths, {mean_label(v0)} per length)", ""]
    L += tables.ruler_tables(variants, spread)
    L += ["## Scores per task and length" + (" (mean ± std over seeds)" if spread else ""), ""]
    L += tables.scores(variants, spread)
    L += tables.shape_notes(variants)
    L += ["## Cost: measured and predicted", ""]
    L += tables.costs(variants)
    L += ["Measured: training tokens/s (the median over logged windows after the first two, so kernel "
          "compilation and data-worker start-up are left out; `report.json` also has the whole-run average) and "
          f"decode ms per token (greedy, batch 1, at {v0['decode_context']} tokens of context) on the device above. "
          "Predicted: `hybrid.analytic` (FLOPs per token; cache = recurrent states + KV cache in bf16, batch 1).",
          ""]
    if any(v["answer_token_acc"].get(t, {}).get(str(n)) for v in variants for t in v0["tasks"] for n in lengths):
        L += ["## Teacher-forced answer-token accuracy (%)" + (" (mean ± std over seeds)" if spread else ""), "",
              "The model reads the prompt and the correct answer; the share of the answer's word and number tokens "
              "it predicts exactly. A graded signal under the all-or-nothing scores: it shows a variant that copies "
              "part of a value, or finds the needle but not the whole answer.", ""]
        L += tables.scores(variants, spread, key="answer_token_acc", intervals=False)
    L += ["How to read it: a recurrent layer keeps a fixed-size state whatever the length (the predicted cache of "
          "an all-recurrent model does not grow), so it must compress every key-value pair it may be asked about; "
          "an attention layer keeps every token in its KV cache and looks the pair up. Tasks whose number of "
          "distinct facts grows with the length (niah_multikey_2/3: every haystack line is a needle) are where "
          "this should show, more at 2x and 4x the training length. Models trained at one length can also fail "
          "to extrapolate (RoPE attention beyond its training positions), which the 1x column separates from "
          "retrieval failures. These are expectations; the tables are the measurement.", ""]
    L += ["## Plots", "", "![score vs attention share](score_vs_ratio.png)", "", "![score vs cost](frontier.png)", ""]
    if any(c for v in variants for c in v["answer_acc_curves"]):
        L += ["![learning to retrieve](learning.png)", "",
              "Held-out answer-token accuracy during training (`train.eval_every`): the fraction of answer tokens "
              "of held-out training documents predicted right, teacher-forced.", ""]
    return "\n".join(L)


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
    spread = any(len(v["seeds"]) > 1 for v in variants)
    neigh, abl = tables.neighbours(variants), tables.ablation(variants, spread)
    text = markdown(variants, meta, neigh, abl)
    if "plots_skipped" in meta:
        text += f"\nPlots skipped: {meta['plots_skipped']}\n"
    if meta.get("in_progress"):
        text += f"\n**Partial report**: {meta['in_progress']}.\n"
    if meta.get("not_run (time budget)"):
        text += ("\nNot run (time budget reached; `--resume` adds them): "
                 + ", ".join(meta["not_run (time budget)"]) + "\n")
    paths["md"].write_text(text)
    keys = {"mean": "per length and seed, the unweighted mean of the variant's trained-format task scores (x100); "
                    "held_out_mean: the same over the held-out tasks",
            "intervals95": "95% Wilson intervals [lo, hi] (x100) over samples x seeds (x tasks for the mean)",
            "samples": "samples per (task, length) cell in one seed's evaluation",
            "neighbours": "per pair of neighbouring attention shares and length: difference of the mean of tasks "
                          "(later minus earlier), 95% bootstrap interval over seeds x samples, separated = excludes 0",
            "ablation": "per ablation variant and length: difference from content-on CARVE at the same share",
            "caveat": TRAINED_ON_TEST_FORMAT.replace("**", "")}
    slim = [{k: x for k, x in v.items() if k != "sample_scores"} for v in variants]  # per-sample: in runs/
    paths["json"].write_text(json.dumps({"meta": meta, "keys": keys, "largest_gap": largest_gap(variants),
                                         "neighbours": neigh[1], "ablation": abl[1], "variants": slim},
                                        indent=2, default=str))
    return paths


_ = pm  # re-exported for callers that format cells like the report
