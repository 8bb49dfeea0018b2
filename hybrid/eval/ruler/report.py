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


HELD_OUT_MARK = "\u2020"  # dagger
HELD_OUT_NOTE = HELD_OUT_MARK + " held out: evaluated but never trained on; averaged apart"


def task_label(run: RulerRun, t: str) -> str:
    return t + (" *" if t in run.ruler_like else "") + (f" {HELD_OUT_MARK}" if t in run.held_out else "")


def count_label(counts: list[int], what: str) -> str:
    """"WHAT of N tasks", or "WHAT of the tasks that fit (a/b/c)" when the count changes with the length
    (``counts``: the tasks behind the mean at each length)."""
    if len(set(counts)) <= 1:
        return f"{what} of {counts[0] if counts else 0} tasks"
    return f"{what} of the tasks that fit ({'/'.join(map(str, counts))})"


def mean_label(run: RulerRun, held_out: bool = False) -> str:
    counts = [len(run.mean_tasks(n, held_out)) for n in run.lengths]
    return count_label(counts, f"held-out {HELD_OUT_MARK} mean" if held_out else "mean")


def mean_cell(run: RulerRun, n: int, held_out: bool = False) -> str:
    m = run.mean(n, held_out)
    k = len(run.mean_tasks(n, held_out))
    return fmt(m) + ("" if math.isnan(m) else f" {fmt_interval(*wilson(m, run.samples * k))}")


def notes(run: RulerRun) -> list[str]:
    """The footnotes of a run's table: intervals, teacher forcing, held-out tasks, skipped and thin cells,
    the essay haystack."""
    from hybrid.tasks.haystack import essay_label

    out = [CI_NOTE] + ([TF_NOTE] if run.answer_token_acc else []) + ([HELD_OUT_NOTE] if run.held_out else [])
    out += shape_notes(run.shape, run.skipped)
    if run.ruler_like:
        out.append(RULER_LIKE_NOTE.format(haystack=essay_label(run.haystack)))
    return out


def shape_notes(shape: dict, skipped: dict) -> list[str]:
    """One line per task whose haystack is thin at some length, one per task that did not fit."""
    out = []
    for t, cells in shape.items():
        thin = [(n, c) for n, c in cells.items() if c.get("thin")]
        if thin:
            out.append(f"task shape: {t} holds only " + ", ".join(f"{c['median']:g} {c['unit']} at {n}"
                                                                 for n, c in thin)
                       + " (median per sample): far from RULER's shape (its shortest length is 4096 tokens)")
    for t, cells in skipped.items():
        out.append(f"task shape: {t} does not fit {', '.join(map(str, cells))} tokens; not scored there")
    return out


def cell(run: RulerRun, task: str, n: int) -> str:
    """The score, with the teacher-forced answer-token accuracy in parentheses when measured."""
    acc = run.answer_token_acc.get(task, {}).get(n)
    score = run.scores.get(task, {}).get(n)
    ci = "" if score is None or math.isnan(score) else f" {fmt_interval(*wilson(score, run.samples))}"
    return fmt(score) + ci + ("" if acc is None else f" ({acc:.0f})")


def _mean_rows(run: RulerRun) -> list[list[str]]:
    rows = [[mean_label(run), *(mean_cell(run, n) for n in run.lengths)]]
    if run.held_out:
        rows.append([mean_label(run, True), *(mean_cell(run, n, True) for n in run.lengths)])
    return rows


def plain_table(run: RulerRun, title: str = "RULER") -> str:
    rows = [["task", *map(str, run.lengths)]]
    rows += [[task_label(run, t), *(cell(run, t, n) for n in run.lengths)] for t in run.tasks]
    rows += _mean_rows(run)
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [title] + ["  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join(lines + notes(run))


def table(run: RulerRun, title: str = "RULER"):
    """A rich table (task x length, mean row); plain text when rich is not installed."""
    try:
        from rich.table import Table
    except ImportError:
        return plain_table(run, title)

    tab = Table(title=title, caption="\n".join(notes(run)))
    tab.add_column("task")
    for n in run.lengths:
        tab.add_column(str(n), justify="right")
    for t in run.tasks:
        tab.add_row(task_label(run, t), *(cell(run, t, n) for n in run.lengths))
    tab.add_section()
    for row in _mean_rows(run):
        tab.add_row(*row, style="bold")
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
    ax.set_yticks(range(len(rows)), [task_label(run, r) if r in run.tasks else r for r in rows])
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
