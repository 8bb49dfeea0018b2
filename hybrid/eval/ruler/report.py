"""Show and save a RULER run: a rich table (task x length), results.json, predictions.jsonl and a
heat map PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .intervals import fmt_interval, wilson
from .runner import RulerRun

RULER_LIKE_NOTE = ("* RULER-like: essay haystack is {haystack}, not Paul Graham's essays; not comparable with "
                   "published RULER numbers.")


def fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


TF_NOTE = "(in parentheses: teacher-forced accuracy on the answer's word/number tokens, %)"
CI_NOTE = "[lo, hi]: 95% Wilson interval over the samples of the cell (x tasks for the mean)"


def mean_label(run: RulerRun) -> str:
    return f"mean of {len(run.tasks)} tasks"


def mean_cell(run: RulerRun, n: int) -> str:
    m = run.mean(n)
    return fmt(m) + ("" if math.isnan(m) else f" {fmt_interval(*wilson(m, run.samples * len(run.tasks)))}")


def cell(run: RulerRun, task: str, n: int) -> str:
    """The score, with the teacher-forced answer-token accuracy in parentheses when measured."""
    acc = run.answer_token_acc.get(task, {}).get(n)
    score = run.scores.get(task, {}).get(n)
    ci = "" if score is None or math.isnan(score) else f" {fmt_interval(*wilson(score, run.samples))}"
    return fmt(score) + ci + ("" if acc is None else f" ({acc:.0f})")


def plain_table(run: RulerRun, title: str = "RULER") -> str:
    from hybrid.tasks.haystack import essay_label

    rows = [["task", *map(str, run.lengths)]]
    rows += [[t + (" *" if t in run.ruler_like else ""), *(cell(run, t, n) for n in run.lengths)]
             for t in run.tasks]
    rows.append([mean_label(run), *(mean_cell(run, n) for n in run.lengths)])
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [title] + ["  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.append(CI_NOTE)
    if run.answer_token_acc:
        lines.append(TF_NOTE)
    if run.ruler_like:
        lines.append(RULER_LIKE_NOTE.format(haystack=essay_label(run.haystack)))
    return "\n".join(lines)


def table(run: RulerRun, title: str = "RULER"):
    """A rich table (task x length, mean row); plain text when rich is not installed."""
    try:
        from rich.table import Table
    except ImportError:
        return plain_table(run, title)

    from hybrid.tasks.haystack import essay_label

    notes = [CI_NOTE] + ([TF_NOTE] if run.answer_token_acc else []) + (
        [RULER_LIKE_NOTE.format(haystack=essay_label(run.haystack))] if run.ruler_like else [])
    tab = Table(title=title, caption="\n".join(notes))
    tab.add_column("task")
    for n in run.lengths:
        tab.add_column(str(n), justify="right")
    for t in run.tasks:
        name = t + (" *" if t in run.ruler_like else "")
        tab.add_row(name, *(cell(run, t, n) for n in run.lengths))
    tab.add_section()
    tab.add_row(mean_label(run), *(mean_cell(run, n) for n in run.lengths), style="bold")
    return tab


def heatmap(run: RulerRun, path: str | Path, title: str = "RULER") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = run.tasks + [mean_label(run)]
    data = np.array([[run.scores.get(t, {}).get(n, np.nan) for n in run.lengths] for t in run.tasks]
                    + [[run.mean(n) for n in run.lengths]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(run.lengths), 0.9 + 0.42 * len(rows)))
    im = ax.imshow(data, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(run.lengths)), [str(n) for n in run.lengths])
    ax.set_yticks(range(len(rows)), [r + (" *" if r in run.ruler_like else "") for r in rows])
    ax.set_xlabel("target length (tokens)")
    for i in range(len(rows)):
        for j in range(len(run.lengths)):
            if not np.isnan(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.0f}", ha="center", va="center", fontsize=8)
    ax.axhline(len(run.tasks) - 0.5, color="black", lw=1)
    sub = "  (* RULER-like: local essay haystack)" if run.ruler_like else ""
    ax.set_title(f"{title}, {run.samples} samples/cell{sub}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04, label="score (x100)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save(run: RulerRun, out: str | Path, extra: dict | None = None, title: str = "RULER") -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = run.to_dict()
    if extra:
        d.update(extra)
    paths = {"json": out / "results.json", "predictions": out / "predictions.jsonl", "png": out / "heatmap.png"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(d, indent=2))
    tmp.replace(paths["json"])
    with open(paths["predictions"], "w") as f:
        for p in run.predictions:
            f.write(json.dumps(p) + "\n")
    try:
        heatmap(run, paths["png"], title)
    except ImportError:  # matplotlib missing: the table and JSON are the results
        paths.pop("png")
    return paths
