"""Metrics: JSONL log, FLOPs per token and MFU, and the loss-curve plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

# Dense peak FLOP/s per GPU by name fragment: (bf16 tensor core, fp32 without tensor cores).
PEAK_FLOPS = {
    "H200": (989e12, 67e12), "H100": (989e12, 67e12), "H800": (989e12, 67e12), "GH200": (989e12, 67e12),
    "B200": (2250e12, 80e12), "A100": (312e12, 19.5e12), "A800": (312e12, 19.5e12),
    "L40S": (362e12, 91.6e12), "L4": (121e12, 30.3e12), "A10": (125e12, 31.2e12), "4090": (165e12, 82.6e12),
}


def peak_flops(device: torch.device, bf16: bool) -> float | None:
    """Peak FLOP/s of one device, or None when unknown (CPU, unlisted GPU). ``HYBRID_PEAK_FLOPS``
    (a number) overrides."""
    env = os.environ.get("HYBRID_PEAK_FLOPS")
    if env:
        return float(env)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for frag, (p16, p32) in PEAK_FLOPS.items():
        if frag in name:
            return p16 if bf16 else p32
    return None


def flops_per_token(model: torch.nn.Module, recipe, seq_len: int) -> tuple[float, str]:
    """Training FLOPs per token (forward + backward) at context ``seq_len``: the analytic model
    (``hybrid.analytic.costs.ModelCosts.train_flops_per_token``: matmuls x3 plus the attention and
    recurrent cores) when it is importable, else 6 * (number of parameters). Returns (flops, source).
    For packed batches the attention core is counted at the full row length, an upper bound."""
    try:
        from hybrid.analytic.costs import ModelCosts

        return float(ModelCosts(recipe.model_config_kwargs()).train_flops_per_token(seq_len)["total"]), \
            "analytic"
    except Exception:  # noqa: BLE001 - the analytic model is optional here
        pass
    n = sum(p.numel() for p in model.parameters())
    return 6.0 * n, "6*params"


class MetricsLog:
    """Append-only JSONL (rank 0 only). On resume, lines past the resumed step are dropped so the file
    reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_step: int | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("step", 0) <= resume_step:
                    keep.append(line)
            self.path.write_text("".join(x + "\n" for x in keep))
        elif self.path.exists():
            self.path.unlink()

    def write(self, rec: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def read(self) -> list[dict]:
        return read_metrics(self.path)


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def plot_loss(records: list[dict], out: Path, title: str, baselines: dict | None = None) -> Path | None:
    """Write a PNG of train loss (and eval loss, baselines; the held-out answer-token accuracy on a
    right-hand axis when the source reports it). Returns the path, or None when there is nothing to
    plot."""
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("kind") == "eval" and r.get("eval_loss") is not None]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(*zip(*train), lw=1.2, label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", lw=1.2, ms=4, label="held-out loss")
    answers = [(r["step"], 100 * r["eval_answer_acc"]) for r in records
               if r.get("kind") == "eval" and r.get("eval_answer_acc") is not None]
    if answers:
        ax2 = ax.twinx()
        ax2.plot(*zip(*answers), "s-", lw=1.2, ms=4, color="tab:green", label="held-out answer-token accuracy")
        ax2.set_ylabel("answer-token accuracy (%)", color="tab:green")
        ax2.set_ylim(0, 100)
        ax2.legend(loc="upper center", fontsize=8)
    for name, value in (baselines or {}).items():
        if isinstance(value, (int, float)) and "nats" in name:
            ax.axhline(value, ls="--", lw=1, color="gray")
            ax.annotate(name.replace("_nats", "").replace("_", " "), (train[0][0], value), fontsize=8,
                        color="gray", va="bottom")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
