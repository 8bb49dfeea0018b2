"""The sweep report's markdown tables: summary, scores per task, RULER's tasks x lengths layout, the
differences between neighbouring attention shares, the content-gate ablation, measured vs predicted
costs, and the task-shape notes."""

from __future__ import annotations

import math

from hybrid.eval.ruler.intervals import fmt_interval, wilson

from .aggregate import cell_samples, mean_label, ms, task_name
from .bootstrap import difference, fmt_difference

MIXER_LABEL = {"carve": "CARVE, content on", "carve-content-off": "CARVE, content off", "gdn2": "GDN-2"}
ABLATION = ("carve", "carve-content-off", "gdn2")


def pm(values: list[float], spread: bool, n: int | None = None) -> str:
    """Mean (± std over seeds when ``spread``), then the Wilson interval over ``n`` samples when known."""
    m, s = ms(values)
    if math.isnan(m):
        return "-"
    text = f"{m:.1f} ± {s:.1f}" if spread else f"{m:.1f}"
    return text + (f" {fmt_interval(*wilson(m, n))}" if n else "")


def row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def header(cells) -> list[str]:
    return [row(cells), "|" + "---|" * len(cells)]


def mean_cell(v: dict, n: int, spread: bool, held_out: bool = False) -> str:
    vals = (v["held_out_mean"] if held_out else v["mean"]).get(str(n), [])
    return pm(vals, spread, cell_samples(v, mean=True, length=n, held_out=held_out))


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


def summary(variants: list[dict], spread: bool) -> list[str]:
    v0 = variants[0]
    lengths = v0["lengths"]
    held = bool(v0["held_out"])
    cols = ["variant", "layout", "attn share", "recurrent layer"]
    cols += [f"{mean_label(v0)} @{n}" for n in lengths]
    cols += [f"{mean_label(v0, True)} @{n}" for n in lengths] if held else []
    cols += ["params"]
    L = header(cols)
    for v in variants:
        cells = [v["name"], f"`{v['layout']}`", f"{v['attention_share']:.3f}",
                 MIXER_LABEL.get(v["recurrent_mixer"], v["recurrent_mixer"] or "-")]
        cells += [mean_cell(v, n, spread) for n in lengths]
        cells += [mean_cell(v, n, spread, True) for n in lengths] if held else []
        cells += [f"{v['params'] / 1e6:.2f}M"]
        L.append(row(cells))
    return L + [""]


def scores(variants: list[dict], spread: bool, key: str = "scores", intervals: bool = True) -> list[str]:
    v0 = variants[0]
    L = header(["variant"] + [f"{task_name(v0, t)} @{n}" for t in v0["tasks"] for n in v0["lengths"]])
    for v in variants:
        L.append(row([v["name"]] + [pm(v[key].get(t, {}).get(str(n), []), spread,
                                        cell_samples(v) if intervals else None)
                                     for t in v0["tasks"] for n in v0["lengths"]]))
    return L + [""]


def ruler_tables(variants: list[dict], spread: bool) -> list[str]:
    """RULER's layout, one table per variant: tasks x lengths, the average of the tasks per length last
    (and the held-out tasks' average apart)."""
    L = []
    for v in variants:
        L += [f"**{v['name']}** (`{v['layout']}`)", ""]
        L += header(["task"] + [f"{n} ({n / v['train_length']:g}x)" for n in v["lengths"]])
        for t in v["tasks"]:
            L.append(row([task_name(v, t)] + [pm(v["scores"][t].get(str(n), []), spread, cell_samples(v))
                                               for n in v["lengths"]]))
        L.append(row([f"**{mean_label(v)}**"] + [mean_cell(v, n, spread) for n in v["lengths"]]))
        if v["held_out"]:
            L.append(row([f"**{mean_label(v, True)}**"] + [mean_cell(v, n, spread, True) for n in v["lengths"]]))
        L.append("")
    return L


def ladder(variants: list[dict]) -> list[dict]:
    """One variant per attention share, sorted by share: at a share held by several variants, the one
    whose recurrent layer is the sweep's usual one (the ablation variants have their own table)."""
    kinds = [v["recurrent_mixer"] for v in variants if v["recurrent_mixer"]]
    usual = max(set(kinds), key=kinds.count) if kinds else None
    if "carve" in kinds:
        usual = "carve"
    best: dict[float, dict] = {}
    for v in variants:
        share = round(v["attention_share"], 6)
        cur = best.get(share)
        if cur is None or (cur["recurrent_mixer"] not in (usual, None) and v["recurrent_mixer"] in (usual, None)):
            best[share] = v
    return [best[s] for s in sorted(best)]


def neighbours(variants: list[dict]) -> tuple[list[str], list[dict]]:
    """For each pair of neighbouring attention shares, the bootstrap interval of the difference of their
    mean-of-tasks scores per length; 'yes' where the interval excludes 0."""
    steps = ladder(variants)
    v0 = variants[0]
    if len(steps) < 2:
        return [], []
    if not any(v["sample_scores"].get(t, {}).get(str(n)) for v in steps for t in v["tasks"] for n in v["lengths"]):
        return ["The results hold no per-sample scores (written by an older version), so no bootstrap interval "
                "of the differences between shares can be drawn.", ""], []
    L = header(["from (share)", "to (share)"] + [f"difference @{n}" for n in v0["lengths"]])
    data = []
    for a, b in zip(steps, steps[1:]):
        cells = [f"{a['name']} ({a['attention_share']:.3f})", f"{b['name']} ({b['attention_share']:.3f})"]
        for n in v0["lengths"]:
            d = difference(a, b, n, v0["trained_tasks"])
            cells.append(fmt_difference(d))
            data.append({"from": a["name"], "to": b["name"], "length": n, **(d or {})})
        L.append(row(cells))
    return L + [""], data


def ablation(variants: list[dict], spread: bool) -> tuple[list[str], list[dict]]:
    """At each attention share where CARVE with content on, CARVE with content off or GDN-2 appear side
    by side (recognised from the blocks, not the names): their scores, and each one's difference from
    content-on CARVE."""
    v0 = variants[0]
    L, data = [], []
    shares = sorted({round(v["attention_share"], 6) for v in variants})
    for share in shares:
        group = {}
        for v in variants:
            if round(v["attention_share"], 6) == share and v["recurrent_mixer"] in ABLATION:
                group.setdefault(v["recurrent_mixer"], v)
        if len(group) < 2:
            continue
        ref = group.get("carve")
        L += [f"Attention share {share:g}:", ""]
        cols = ["recurrent layer", "variant"] + [f"{mean_label(v0)} @{n}" for n in v0["lengths"]]
        cols += [f"vs content on @{n}" for n in v0["lengths"]] if ref else []
        L += header(cols)
        for kind in ABLATION:
            v = group.get(kind)
            if v is None:
                continue
            cells = [MIXER_LABEL[kind], v["name"]] + [mean_cell(v, n, spread) for n in v["lengths"]]
            if ref:
                for n in v0["lengths"]:
                    d = None if v is ref else difference(ref, v, n, v0["trained_tasks"])
                    cells.append("-" if v is ref else fmt_difference(d))
                    if v is not ref:
                        data.append({"share": share, "reference": ref["name"], "variant": v["name"],
                                     "kind": kind, "length": n, **(d or {})})
            L.append(row(cells))
        L.append("")
    return L, data


def costs(variants: list[dict]) -> list[str]:
    """Measured training and decoding cost next to the analytic prediction, each also relative to a
    reference variant (the all-attention one when there is one), so the two can be compared."""
    ref = next((v for v in variants if v["attention_share"] == 1.0), variants[0])
    ctx = variants[0]["decode_context"]

    def pred(v, key):
        if key == "train":
            return v["analytic"].get("train_flops_per_token")
        return v["analytic"].get("by_length", {}).get(str(ctx), {}).get("decode_flops_per_token")

    def rel(x, r):
        return "-" if not x or not r or math.isnan(x) or math.isnan(r) else f"{x / r:.2f}"

    L = header(["variant", "train tok/s (measured)", "train cost rel. (measured)", "train FLOP/tok (pred.)",
                "train cost rel. (pred.)", f"decode ms/tok @{ctx} (measured)", "decode cost rel. (measured)",
                f"decode FLOP/tok @{ctx} (pred.)", "decode cost rel. (pred.)", f"cache @{ctx} (pred.)"])
    r_tps, r_ms = ms(ref["train_tokens_per_s"])[0], ms(ref["decode_ms_per_token"])[0]
    for v in variants:
        (tps, tps_sd), (dms, dms_sd) = ms(v["train_tokens_per_s"]), ms(v["decode_ms_per_token"])
        many = len(v["seeds"]) > 1
        tps_text = f"{tps:,.0f}" + (f" ± {tps_sd:,.0f}" if many else "")
        dms_text = f"{dms:.2f}" + (f" ± {dms_sd:.2f}" if many else "")
        tf, df = pred(v, "train"), pred(v, "decode")
        cache = v["analytic"].get("by_length", {}).get(str(ctx), {}).get("cache_bytes")
        L.append(row([v["name"], tps_text, rel(r_tps, tps), _fmt_flops(tf) if tf else "-",
                      rel(tf, pred(ref, "train")), dms_text, rel(dms, r_ms), _fmt_flops(df) if df else "-",
                      rel(df, pred(ref, "decode")), _fmt_bytes(cache) if cache is not None else "-"]))
    L += ["", "Measured costs are the mean (± std over seeds when there are several). "
              f"`rel.`: cost per token relative to {ref['name']} (measured: its tokens/s over this variant's, or "
              "this variant's ms/token over its; predicted: the FLOP ratio). A measured ratio far from the "
              "predicted one shows where the hardware or the kernels, not the arithmetic, set the cost.", ""]
    return L


def shape_notes(variants: list[dict]) -> list[str]:
    """Where a task at a length barely exists (a thin haystack) or does not fit at all."""
    v0 = variants[0]
    L = []
    for t, cells in v0["shape"].items():
        thin = [(n, c) for n, c in cells.items() if c.get("thin")]
        if thin:
            L.append(f"- {t}: only " + ", ".join(f"{c['median']:g} {c['unit']} at {n} tokens" for n, c in thin)
                     + " (median per sample); RULER's shortest length is 4096 tokens, where this task has many "
                       "times more, so here it measures little more than the answer format.")
    for t, cells in v0["skipped"].items():
        L.append(f"- {t}: does not fit {', '.join(map(str, cells))} tokens (its template with the smallest "
                 "haystack is longer); not scored there, and left out of the mean at that length.")
    if not L:
        return []
    return ["## Task shape", ""] + L + [""]
