"""The sweep report's plots: score vs attention share per length, score vs measured cost, learning curves."""

from __future__ import annotations

import math
from pathlib import Path

from .aggregate import mean_label, ms, task_name


def plot_score_vs_ratio(variants: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean_name = mean_label(variants[0])
    tasks = variants[0]["tasks"] + [mean_name]
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
                vals = v["mean"][str(n)] if t == mean_name else v["scores"][t][str(n)]
                m, s = ms(vals)
                xs.append(v["attention_share"])
                ys.append(m)
                es.append(s)
            label = f"{n} ({n / train:g}x)" if train else str(n)
            ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=3, lw=1.2, label=label, color=f"C{j}")
        ax.set_title(task_name(variants[0], t), fontsize=9)
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
            x, xs = ms(v[key])
            y, ys = ms(v["mean"][longest])
            ax.errorbar([x], [y], xerr=[xs], yerr=[ys], marker="o", color=f"C{i % 10}", capsize=3)
            text = v["name"] if v["layout"] in v["name"] else f"{v['name']}\n{v['layout']}"
            # staggered heights, so variants with close costs and scores keep readable labels
            ax.annotate(text, (x, y), fontsize=6, xytext=(4, 4 + 9 * (i % 3)), textcoords="offset points")
        ax.set_xlabel(label)
        ax.set_ylim(-3, 103)
        ax.set_ylabel(f"{mean_label(variants[0])} at {longest} tokens (score x100)")
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
