"""Draw learning.png from curves.json (the measured curves of the H200 runs of 2026-11-29):
PYTHONPATH=. python3 docs/results/h200-learning-2026-11-29/plot.py"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hybrid.sweep.report import draw_learning  # noqa: E402

here = Path(__file__).parent
data = json.loads((here / "curves.json").read_text())
titles = {"A": "run A: batch 32, 3 variants (+ a small probe) at once", "B": "run B: batch 32, 5 variants at once (stopped at 575 s)",
          "C": "run C: batch 16, 3 variants at once"}
colors = {"AAAAAAAA": "C0", "CCCACCCA": "C1", "CCCCCCCA": "C2", "CACACACA": "C3", "CCCCCCCC": "C4"}
fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
for ax, run in zip(axes, "ABC"):
    draw_learning(ax, [(r["layout"], colors[r["layout"]], r["curve"]) for r in data["runs"] if r["run"] == run])
    ax.set_title(titles[run], fontsize=9)
    ax.set_xlim(0, 1550)
    ax.legend(fontsize=7, loc="center right")
axes[0].set_ylabel("held-out answer-token accuracy (%)")
axes[0].set_ylim(30, 102)
fig.suptitle("When does an 8-layer, width-512 hybrid learn to copy a RULER needle? (one H200, 2026-11-29)",
             fontsize=10)
fig.tight_layout()
fig.savefig(here / "learning.png", dpi=110)
