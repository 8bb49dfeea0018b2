"""Bootstrap intervals for differences between sweep variants, over seeds x samples.

A variant's score at one length is the mean over its seeds of the mean over tasks of the per-sample
scores. One bootstrap replicate draws the seeds with replacement, and within every drawn seed each
task's samples with replacement (a two-level bootstrap), so the interval of a difference carries both
the seed-to-seed spread and the sampling noise of the evaluation. With one seed it carries only the
latter."""

from __future__ import annotations

import math

REPLICATES = 2000


def replicates(per_seed: list[list[list[float]]], rng, reps: int = REPLICATES):
    """``per_seed[s][t]``: the per-sample scores (0..1) of task t in seed s. Returns ``reps`` bootstrap
    values (x100) of the seed-mean of the task-mean, or None without samples."""
    import numpy as np

    seeds = [s for s in per_seed if s and all(len(x) for x in s)]
    if not seeds:
        return None
    task_means = np.empty((len(seeds), reps))
    for i, tasks in enumerate(seeds):
        acc = np.zeros(reps)
        for x in tasks:
            a = np.asarray(x, dtype=float)
            acc += a[rng.integers(0, len(a), (reps, len(a)))].mean(1)
        task_means[i] = acc / len(tasks)
    pick = rng.integers(0, len(seeds), (reps, len(seeds)))
    return 100.0 * task_means[pick, np.arange(reps)[:, None]].mean(1)


def samples_at(v: dict, tasks: list[str], length: int) -> list[list[list[float]]]:
    """Per seed, per task, the per-sample scores of variant ``v`` at ``length`` (tasks scored there)."""
    have = [t for t in tasks if v["sample_scores"].get(t, {}).get(str(length))]
    if not have:
        return []
    n_seeds = min(len(v["sample_scores"][t][str(length)]) for t in have)
    return [[v["sample_scores"][t][str(length)][s] for t in have] for s in range(n_seeds)]


def difference(a: dict, b: dict, length: int, tasks: list[str], seed: int = 0) -> dict | None:
    """Score of ``b`` minus score of ``a`` (mean of ``tasks`` at ``length``): the point difference of the
    means over seeds, and its 95% percentile bootstrap interval. None when a variant lacks per-sample
    scores there."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sa, sb = samples_at(a, tasks, length), samples_at(b, tasks, length)
    ra, rb = replicates(sa, rng), replicates(sb, rng)
    if ra is None or rb is None:
        return None

    def point(per_seed):
        return 100.0 * float(np.mean([np.mean([np.mean(x) for x in s]) for s in per_seed]))

    d = rb - ra
    lo, hi = (float(x) for x in np.percentile(d, [2.5, 97.5]))
    diff = point(sb) - point(sa)
    return {"diff": diff, "lo": lo, "hi": hi, "separated": lo > 0 or hi < 0,
            "seeds": (len(sa), len(sb)), "replicates": len(d)}


def fmt_difference(d: dict | None) -> str:
    if d is None or math.isnan(d["diff"]):
        return "-"
    verdict = "yes" if d["separated"] else "no"
    return f"{d['diff']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}] {verdict}"
