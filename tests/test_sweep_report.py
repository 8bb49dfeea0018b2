"""Sweep report aggregation over seeds: means, spreads, the largest-gap sentence and the plots."""

import json

from hybrid.sweep.report import aggregate, largest_gap, write_report


def result(name, share, seed, s512, s1024, tps=1000.0, dms=2.0):
    return {
        "name": name, "variant": {"layout.pattern": name}, "seed": seed, "layout": name, "n_layers": 2,
        "attention_layers": [], "attention_share": share, "params": 1000, "train_length": 512, "lengths": [512, 1024],
        "train": {"tokens_per_s": tps, "final_loss": 1.0, "wall_time_s": 1.0},
        "decode": {"ms_per_token": dms, "context": 1024},
        "analytic": {"by_length": {"1024": {"cache_bytes": 2048.0, "decode_flops_per_token": 3.5e6}}},
        "ruler": {"tasks": ["niah_multikey_2"], "ruler_like_tasks": [], "haystack": "default",
                  "scores": {"niah_multikey_2": {"512": s512, "1024": s1024}}, "mean": {"512": s512, "1024": s1024}},
        "device": "cpu",
    }


def test_aggregate_and_report(tmp_path):
    rs = [result("CC", 0.0, 0, 80, 10), result("CC", 0.0, 1, 90, 30), result("CA", 0.5, 0, 100, 90, dms=3.0),
          result("CA", 0.5, 1, 100, 70, dms=3.0)]
    vs = aggregate(rs)
    assert [v["name"] for v in vs] == ["CC", "CA"] and vs[0]["seeds"] == [0, 1]
    gap = largest_gap(vs)
    assert (gap["task"], gap["length"], gap["best"], gap["worst"]) == ("niah_multikey_2", 1024, "CA", "CC")
    assert gap["gap"] == 80 - 20
    paths = write_report(rs, tmp_path, {"name": "t", "sweep": "t.yaml"})
    md = paths["md"].read_text()
    assert "| CC | 85.0 ± 7.1 | 20.0 ± 14.1 |" in md  # per-task row: mean ± std over the two seeds
    assert "| CA | `CA` | 0.500 | - | 100.0 ± 0.0 | 80.0 ± 14.1 |" in md and "niah_multikey_2 at 1024 tokens" in md
    assert "| CA | 1,000 ± 0 | 1.00 | - | - | 3.00 ± 0.00 | 1.50 | 3.50 M | 1.00 | 2.0 KB |" in md  # measured, predicted
    data = json.loads(paths["json"].read_text())
    assert data["largest_gap"]["best"] == "CA"
    assert paths["ratio_png"].stat().st_size > 1000 and paths["frontier_png"].stat().st_size > 1000


def test_single_seed_reports_say_rankings_may_not_repeat(tmp_path):
    (tmp_path / "one").mkdir()
    one = write_report([result("CC", 0.0, 0, 80, 10), result("CA", 0.5, 0, 100, 90)], tmp_path / "one",
                       {"name": "t", "sweep": "t.yaml"})
    assert "One seed per variant" in one["md"].read_text()
    two = write_report([result("CC", 0.0, s, 80, 10) for s in (0, 1)], tmp_path, {"name": "t", "sweep": "t.yaml"})
    assert "One seed per variant" not in two["md"].read_text()


def test_learning_curves_plot(tmp_path):
    rs = [result("CC", 0.0, 0, 80, 10), result("CA", 0.5, 0, 100, 90)]
    rs[1]["train"]["answer_acc_curve"] = [[100, 0.4], [200, 0.9]]
    paths = write_report(rs, tmp_path, {"name": "t", "sweep": "t.yaml"})
    assert paths["learning_png"].stat().st_size > 1000 and "learning.png" in paths["md"].read_text()
    (tmp_path / "one").mkdir()
    assert "learning_png" not in write_report(rs[:1], tmp_path / "one", {"name": "t", "sweep": "t.yaml"})


def test_training_rate_is_the_steady_one(tmp_path):
    """The report's tokens/s leaves out the start-up (first two logged windows: kernel compilation,
    data-worker start); results without the steady rate fall back to the whole-run average, and
    results written before it existed get it from their own metrics log."""
    from hybrid.sweep.runner import _with_steady_rate, read_metrics, steady_tokens_per_s

    log = tmp_path / "run" / "model" / "metrics.jsonl"
    log.parent.mkdir(parents=True)
    rows = [{"kind": "train", "step": s, "tok_per_s": r} for s, r in ((1, 10.0), (10, 900.0), (20, 5000.0),
                                                                      (30, 4000.0), (40, 6000.0))]
    rows.insert(3, {"kind": "eval", "step": 20, "eval_loss": 1.0})
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert steady_tokens_per_s(read_metrics(log)) == 5000.0
    assert steady_tokens_per_s(read_metrics(tmp_path / "missing.jsonl")) is None
    old = result("CA", 0.5, 0, 100, 90, tps=1234.0)
    assert _with_steady_rate(old, tmp_path / "run")["train"]["steady_tokens_per_s"] == 5000.0
    plain = result("CC", 0.0, 0, 80, 10, tps=777.0)
    vs = aggregate([old, plain])
    assert vs[0]["train_tokens_per_s"] == [5000.0] and vs[0]["train_tokens_per_s_whole_run"] == [1234.0]
    assert vs[1]["train_tokens_per_s"] == [777.0]
    md = write_report([old, plain], tmp_path, {"name": "t", "sweep": "t.yaml"})["md"].read_text()
    assert "| 5,000 |" in md and "| 777 |" in md


def test_wilson_interval_known_values():
    import math

    import pytest

    from hybrid.eval.ruler.intervals import wilson

    lo, hi = wilson(50.0, 100)
    assert abs(lo - 40.38) < 0.01 and abs(hi - 59.62) < 0.01
    lo, hi = wilson(0.0, 40)  # no successes: the upper bound is z^2 / (n + z^2)
    assert lo == 0.0 and abs(hi - 100 * 1.96**2 / (40 + 1.96**2)) < 0.05
    assert all(math.isnan(x) for x in wilson(float("nan"), 10))
    with pytest.raises(ValueError, match="at least one sample"):
        wilson(10.0, 0)


def test_labels_intervals_and_per_length_table(tmp_path):
    """The caveat is printed without any essay task, the mean is named for its task count, every score has its
    Wilson interval (samples x seeds), and the RULER layout has an average row per length."""
    rs = [result("CC", 0.0, s, 80, 10) for s in (0, 1)] + [result("CA", 0.5, s, 100, 90) for s in (0, 1)]
    for r in rs:
        r["ruler"]["samples"] = 50
    vs = aggregate(rs)
    assert vs[0]["n_tasks"] == 1 and vs[0]["intervals95"]["scores"]["niah_multikey_2"]["1024"][1] < 20
    paths = write_report(rs, tmp_path, {"name": "t", "sweep": "t.yaml"})
    md = paths["md"].read_text()
    assert "Trained on the test format" in md and "mean of 1 tasks @512" in md and "mean @" not in md
    assert "| CC | 80.0 ± 0.0 [71, 87] | 10.0 ± 0.0 [6, 17] |" in md  # 100 samples behind each cell
    assert "## RULER table per variant" in md and "| **mean of 1 tasks** | 100.0 ± 0.0 [96, 100] |" in md
    assert "exceeds their 95% intervals" in md
    data = json.loads(paths["json"].read_text())
    assert data["largest_gap"]["exceeds_intervals"] is True and "mean" in data["keys"]
    # a difference the intervals cannot separate is not reported as one
    close = [result("CC", 0.0, 0, 10, 10), result("CA", 0.5, 0, 15, 12)]
    for r in close:
        r["ruler"]["samples"] = 40
    (tmp_path / "close").mkdir()
    md = write_report(close, tmp_path / "close", {"name": "t", "sweep": "t.yaml"})["md"].read_text()
    assert "No difference between variants exceeds the 95% intervals: even the largest" in md
    assert "has overlapping intervals [" in md and "Largest difference" not in md


def with_samples(r, hits: dict, n=100, mixer="carve", held=()):
    """Give result ``r`` per-sample scores: ``hits[(task, length)]`` of ``n`` samples right."""
    r["recurrent_mixer"] = mixer
    r["ruler"]["samples"] = n
    r["ruler"]["held_out"] = list(held)
    r["ruler"]["sample_scores"] = {}
    for (t, length), k in hits.items():
        r["ruler"]["sample_scores"].setdefault(t, {})[str(length)] = [1.0] * k + [0.0] * (n - k)
        r["ruler"]["scores"].setdefault(t, {})[str(length)] = 100.0 * k / n
    if held:
        r["ruler"]["tasks"] = list(r["ruler"]["tasks"]) + [t for t in held if t not in r["ruler"]["tasks"]]
    return r


def test_neighbouring_shares_bootstrap_over_seeds_and_samples(tmp_path):
    """Sorted by share: AA vs CA differ by 50 points in every seed (separated), CC vs CA by a few points
    with a seed that flips the sign (not separated)."""
    from hybrid.sweep.bootstrap import difference

    rs = []
    for seed, (cc, ca, aa) in enumerate([(20, 25, 80), (28, 22, 75), (24, 26, 78)]):
        rs.append(with_samples(result("AA", 1.0, seed, 0, 0), {("niah_multikey_2", 512): aa,
                                                              ("niah_multikey_2", 1024): aa}, mixer=None))
        rs.append(with_samples(result("CC", 0.0, seed, 0, 0), {("niah_multikey_2", 512): cc,
                                                              ("niah_multikey_2", 1024): cc}))
        rs.append(with_samples(result("CA", 0.5, seed, 0, 0), {("niah_multikey_2", 512): ca,
                                                              ("niah_multikey_2", 1024): ca}))
    vs = aggregate(rs)
    by = {v["name"]: v for v in vs}
    far = difference(by["CA"], by["AA"], 512, ["niah_multikey_2"])
    near = difference(by["CC"], by["CA"], 512, ["niah_multikey_2"])
    assert far["separated"] and far["lo"] > 40 and abs(far["diff"] - (233 - 73) / 3) < 1e-9
    assert not near["separated"] and near["lo"] < 0 < near["hi"]
    paths = write_report(rs, tmp_path, {"name": "t", "sweep": "t.yaml"})
    md = paths["md"].read_text()
    assert "## Neighbouring attention shares" in md
    rows = [line for line in md.splitlines() if line.startswith("| CC (0.000) | CA (0.500) |")
            or line.startswith("| CA (0.500) | AA (1.000) |")]
    assert len(rows) == 2 and rows[0].rstrip(" |").endswith("no")
    assert rows[1].rstrip(" |").endswith("yes")
    data = json.loads(paths["json"].read_text())
    assert [(d["from"], d["to"], d["separated"]) for d in data["neighbours"] if d["length"] == 512] == [
        ("CC", "CA", False), ("CA", "AA", True)]
    assert "sample_scores" not in data["variants"][0]  # per-sample scores stay in the runs' results


def test_ablation_table_is_recognised_from_the_blocks_not_the_names(tmp_path):
    """Three variants at share 1/4 whose names say nothing: the table labels them from their recurrent
    layers (content on, content off, GDN-2) and compares each with content-on CARVE."""
    rs = []
    for seed in (0, 1):
        for name, mixer, k in (("v1", "gdn2", 30), ("v2", "carve", 70), ("v3", "carve-content-off", 40)):
            r = result(name, 0.25, seed, 0, 0)
            r["layout"] = "CCCA"
            rs.append(with_samples(r, {("niah_multikey_2", 512): k, ("niah_multikey_2", 1024): k}, mixer=mixer))
    md = write_report(rs, tmp_path, {"name": "t", "sweep": "t.yaml"})["md"].read_text()
    assert "## Ablation: the content gate" in md and "Attention share 0.25" in md
    block = md.split("## Ablation")[1].split("## RULER table")[0]
    lines = [line for line in block.splitlines() if line.startswith("| CARVE") or line.startswith("| GDN")]
    assert [line.split(" | ")[0] for line in lines] == ["| CARVE, content on", "| CARVE, content off", "| GDN-2"]
    assert lines[0].split(" | ")[1] == "v2" and lines[2].split(" | ")[1] == "v1"
    assert "-30.0 [" in lines[1] and "-40.0 [" in lines[2] and lines[2].rstrip(" |").endswith("yes")
    # without two of the three kinds at one share there is no ablation table
    (tmp_path / "one").mkdir()
    md = write_report([r for r in rs if r["name"] == "v2"], tmp_path / "one", {"name": "t", "sweep": "t.yaml"})
    assert "## Ablation" not in md["md"].read_text()


def test_recurrent_mixer_of_a_recipe_layout():
    from hybrid.sweep.runner import recurrent_mixer

    carve = {"kind": "carve", "heads": 2, "content": "self"}
    att = {"kind": "attention", "heads": 2}
    assert recurrent_mixer([carve, carve, carve, att]) == "carve"
    assert recurrent_mixer([dict(carve, content="off"), att]) == "carve-content-off"
    assert recurrent_mixer([{"kind": "gdn2", "heads": 2}, att]) == "gdn2"
    assert recurrent_mixer([att]) is None and recurrent_mixer([carve, {"kind": "gdn2", "heads": 2}]) == "mixed"


def test_held_out_tasks_and_task_shape_in_the_report(tmp_path):
    rs = []
    for seed in (0, 1):
        r = with_samples(result("CA", 0.5, seed, 0, 0), {("niah_multikey_2", 512): 90, ("niah_multikey_2", 1024): 60,
                                                        ("vt", 512): 10, ("vt", 1024): 0}, held=["vt"])
        r["ruler"]["shape"] = {"niah_multikey_2": {"512": {"unit": "distractor needles", "median": 12, "min": 11,
                                                          "thin": True}}}
        r["ruler"]["skipped"] = {"cwe": {"512": "cwe at 512 tokens: length too short"}}
        rs.append(r)
    vs = aggregate(rs)
    assert vs[0]["mean"]["512"] == [90.0, 90.0] and vs[0]["held_out_mean"]["512"] == [10.0, 10.0]
    md = write_report(rs, tmp_path, {"name": "t", "sweep": "t.yaml"})["md"].read_text()
    assert "Trained on the test format" in md and "vt \u2020" in md and "held-out \u2020 mean of 1 tasks @512" in md
    assert "| **held-out \u2020 mean of 1 tasks** | 10.0 ± 0.0 [7, 15] | 0.0 ± 0.0 [0, 2] |" in md
    assert "## Task shape" in md and "niah_multikey_2: only 12 distractor needles at 512 tokens" in md
    assert "cwe: does not fit 512 tokens" in md
