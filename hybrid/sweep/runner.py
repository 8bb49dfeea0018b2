"""``hybrid sweep``: train every variant of a sweep file, evaluate each on RULER at the lengths of
its ``eval:`` section (default 1x, 2x, 4x the training length), measure its cost, and write one report.

Layout of the output folder::

    OUT/sweep.json                      the sweep file, variants and seeds of this run
    OUT/runs/VARIANT/seedS/model/       the trained model (``hybrid train`` output)
    OUT/runs/VARIANT/seedS/ruler/       results.json, predictions.jsonl, heatmap.png
    OUT/runs/VARIANT/seedS/result.json  written last: this (variant, seed) is done
    OUT/report.md, OUT/report.json, OUT/*.png

Seeds: ``sweep.seeds: [0, 1, 2]`` in the sweep file (or ``--seeds 0,1,2``) runs every variant once per
seed ``s``; ``s`` sets the training seed (``train.seed + s``) and nothing else: the evaluation's
samples (``eval.seed``) are the same for every seed, so seeds differ only in training.

A (variant, seed) with a ``result.json`` is never redone; ``--resume`` continues an interrupted
sweep from there (a half-trained model resumes from its last checkpoint)."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from hybrid.blocks.spec import is_recurrent


class SweepError(RuntimeError):
    """A sweep cannot start or continue (message meant for the user)."""


@dataclass
class VariantRun:
    recipe: object
    seed: int
    dir: Path

    @property
    def done(self) -> bool:
        return (self.dir / "result.json").is_file()


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def attention_share(layers: list[dict]) -> float:
    return sum(not is_recurrent(b) for b in layers) / max(len(layers), 1)


def recurrent_mixer(layers: list[dict]) -> str | None:
    """What the recurrent layers of a layout are, read from their block settings: ``carve`` (content
    signal on), ``carve-content-off``, ``gdn2``, ``mixed`` when they differ, None without any."""
    kinds = set()
    for b in layers:
        if not is_recurrent(b):
            continue
        kind = b["kind"]
        if kind == "carve" and b.get("content") == "off":
            kind = "carve-content-off"
        kinds.add(kind)
    if not kinds:
        return None
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _seed_list(seeds) -> list[int]:
    from hybrid.recipes.sweep import parse_seeds

    try:
        return parse_seeds(seeds)
    except ValueError as e:
        raise SweepError(str(e)) from None


def resolve_seeds(sweep_path: str, seeds=None) -> list[int]:
    """The training seeds of a sweep: ``seeds`` (a list, or a count N = 0..N-1) when given, else the
    sweep file's ``sweep.seeds``, else ``[0]``."""
    from hybrid.recipes.sweep import sweep_seeds

    if seeds is not None:
        return _seed_list(seeds)
    return sweep_seeds(sweep_path) or [0]


def plan(sweep_path: str, out: Path, seeds, resume: bool, overrides=None) -> list[VariantRun]:
    from hybrid.recipes import load_sweep

    seeds = _seed_list(seeds)
    recipes = load_sweep(sweep_path, overrides)
    runs = [VariantRun(r, s, out / "runs" / r.name / f"seed{s}") for r in recipes for s in seeds]
    meta = out / "sweep.json"
    done = [r for r in runs if r.done]
    if meta.is_file() and not resume:
        earlier = json.loads(meta.read_text())
        if any((out / "runs").glob("*/*/result.json")) or earlier.get("variants"):
            raise SweepError(f"{out} already holds a sweep ({len(done)} of {len(runs)} runs done); pass --resume to "
                             "continue it, or choose another --out")
    if meta.is_file() and resume:
        earlier = json.loads(meta.read_text())
        before = _seed_list(earlier.get("seeds", seeds))  # a count in sweeps written before seed lists
        dropped = sorted(set(before) - set(seeds))
        if list(earlier.get("overrides", [])) != list(overrides or []) or dropped:
            raise SweepError(f"{out} was started with other settings (overrides {earlier.get('overrides')}, seeds "
                             f"{before}); resume it with the same --set and at least those seeds, or use another "
                             "--out")
        gone = sorted(set(earlier.get("variants", [])) - {r.name for r in recipes})
        if gone:
            raise SweepError(f"{out} was started from a different sweep (variants {', '.join(gone)} are not in "
                             f"{sweep_path}); use another --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_json(meta, {"sweep": str(sweep_path), "variants": [r.name for r in recipes], "seeds": seeds,
                       "overrides": list(overrides or []), "updated": time.strftime("%Y-%m-%d %H:%M:%S")})
    return runs


def read_metrics(path: Path) -> list[dict]:
    from hybrid.train.metrics import read_metrics as read  # imports torch: not at module import

    return read(path)


def _answer_curve(records: list[dict]) -> list[list[float]]:
    """[[step, held-out answer-token accuracy], ...] from a training run's metrics records (ruler_mix data
    with periodic evaluation); empty when the run logged none."""
    return [[r["step"], r["eval_answer_acc"]] for r in records
            if r.get("kind") == "eval" and r.get("eval_answer_acc") is not None]


def steady_tokens_per_s(records: list[dict]) -> float | None:
    """Training throughput with the start-up left out: the median tokens/s of the logged windows after
    the first two (the first holds kernel compilation and data-worker start-up, which in the H200
    sweep of 2026-11-29 made the first variant's whole-run average 58% lower than its steady rate);
    ``None`` when the run logged fewer than three windows."""
    rates = [r["tok_per_s"] for r in records if r.get("kind") == "train" and r.get("tok_per_s")]
    return statistics.median(rates[2:]) if len(rates) > 2 else None


def _with_steady_rate(result: dict, run_dir: Path) -> dict:
    """Results written before the steady rate existed get it from their metrics (same run, same log)."""
    tr = result.get("train", {})
    if "steady_tokens_per_s" not in tr:
        tr["steady_tokens_per_s"] = steady_tokens_per_s(read_metrics(run_dir / "model" / "metrics.jsonl"))
    return result


def run_one(vr: VariantRun, *, device: str | None, progress: bool, console, train_fn=None) -> dict:
    """Train, evaluate and time one (variant, seed); returns and saves its result dict."""
    from hybrid.eval.config import EvalConfig
    from hybrid.eval.ruler.checkpoint import load_checkpoint
    from hybrid.eval.ruler.report import save
    from hybrid.eval.ruler.runner import evaluate
    from hybrid.train import TrainConfig

    from .analytic import predictions
    from .cost import decode_ms_per_token

    rec = vr.recipe
    model_dir = vr.dir / "model"
    base_seed = TrainConfig.from_dict(rec.train).seed
    overrides = [f"train.seed={base_seed + vr.seed}"]
    if train_fn is None:
        from hybrid.train import run_training as train_fn
    resume = (model_dir / "checkpoints" / "latest").is_file()
    t_train = time.perf_counter()
    if (model_dir / "config.json").is_file() and (model_dir / "summary.json").is_file():
        train = json.loads((model_dir / "summary.json").read_text())
    else:
        res = train_fn(rec, str(model_dir), device=device, overrides=overrides, progress=progress, resume=resume)
        train = res.to_dict()
        if train.get("interrupted"):  # Ctrl-C inside training: its checkpoint is kept for --resume
            raise KeyboardInterrupt
    t_eval = time.perf_counter()
    cfg = TrainConfig.from_dict(rec.train)
    ev = EvalConfig.from_dict(rec.eval)
    lengths = ev.resolved_lengths(cfg.seq_len)
    model, tok, _ = load_checkpoint(model_dir, device)
    run = evaluate(model, tok, list(ev.tasks), lengths, ev.samples, batch_size=ev.batch_size, seed=ev.seed,
                   haystack=ev.haystack, data={"qa_1": ev.squad, "qa_2": ev.hotpotqa}, progress=progress,
                   label=f"RULER {rec.name} seed {vr.seed}", held_out=ev.held_out,
                   on_skip=(console.print if console else None))
    save(run, vr.dir / "ruler", {"checkpoint": str(model_dir), "training_length": cfg.seq_len, "seed": vr.seed,
                                 "train_seed": base_seed + vr.seed}, title=f"{rec.name} seed {vr.seed}")
    t_decode = time.perf_counter()
    decode = decode_ms_per_token(model, max(lengths), new_tokens=16 if model.device.type == "cpu" else 64)
    t_end = time.perf_counter()
    records = read_metrics(model_dir / "metrics.jsonl")
    curve = _answer_curve(records)
    if curve:
        train["answer_acc_curve"] = curve
    train["steady_tokens_per_s"] = steady_tokens_per_s(records)
    result = {
        "name": rec.name, "variant": rec.variant, "seed": vr.seed, "train_seed": base_seed + vr.seed,
        "layout": rec.letters, "layer_types": rec.layer_types, "n_layers": len(rec.layers),
        "recurrent_mixer": recurrent_mixer(rec.layers),
        "attention_layers": [i for i, b in enumerate(rec.layers) if not is_recurrent(b)],
        "attention_share": attention_share(rec.layers),
        "params": sum(p.numel() for p in model.parameters()),
        "train": {k: train.get(k) for k in ("steps", "final_loss", "eval_loss", "tokens_per_s", "wall_time_s",
                                            "tokens_seen", "mfu", "flops_per_token", "answer_acc_curve",
                                            "steady_tokens_per_s")},
        "train_length": cfg.seq_len, "lengths": lengths,
        "ruler": run.to_dict(), "decode": decode,
        "analytic": predictions(rec, lengths),
        "device": str(model.device),
        # wall seconds of this invocation's phases (training 0 when it was done earlier and kept)
        "phase_s": {"train": t_eval - t_train, "ruler": t_decode - t_eval, "decode_timing": t_end - t_decode},
    }
    _write_json(vr.dir / "result.json", result)
    del model
    return result


def run_sweep(sweep_path: str, out: str | Path, *, seeds=None, resume: bool = False, overrides=None,
              device: str | None = None, progress: bool = True, console=None, train_fn=None,
              stop_after: int | None = None, time_budget_s: float | None = None,
              skipped: list | None = None, on_result=None) -> list[dict]:
    """Run (or continue) a sweep; returns the result dicts of every finished (variant, seed).
    ``seeds``: a list of training seeds or a count N (0..N-1); None = the sweep file's ``sweep.seeds``
    (default ``[0]``).
    ``stop_after``: stop after this many newly finished runs (for tests of interruption).
    ``time_budget_s``: do not start a run when the time spent so far plus the longest run so far would
    exceed it (the runs left out can be added later with ``resume=True``); their names go to ``skipped``.
    ``on_result(results)`` is called after every newly finished run (the command rewrites the report)."""
    out = Path(out)
    if seeds is None and resume and (out / "sweep.json").is_file():  # resume with the seeds it was started with
        seeds = json.loads((out / "sweep.json").read_text()).get("seeds")
    runs = plan(sweep_path, out, resolve_seeds(sweep_path, seeds), resume, overrides)
    results, fresh = [], 0
    t_start, longest = time.perf_counter(), 0.0
    for i, vr in enumerate(runs):
        tag = f"[{i + 1}/{len(runs)}] {vr.recipe.name} seed {vr.seed}"
        if vr.done:
            if console:
                console.print(f"{tag}: done earlier, kept")
            results.append(_with_steady_rate(json.loads((vr.dir / "result.json").read_text()), vr.dir))
            continue
        if stop_after is not None and fresh >= stop_after:
            break
        if time_budget_s is not None and time.perf_counter() - t_start + longest > time_budget_s:
            left = [f"{r.recipe.name} seed {r.seed}" for r in runs[i:] if not r.done]
            if skipped is not None:
                skipped.extend(left)
            if console:
                console.print(f"[yellow]time budget {time_budget_s:.0f} s: {len(left)} run(s) not started "
                              f"({', '.join(left)}); add them later with --resume[/]")
            break
        if console:
            console.print(f"[bold]{tag}[/]: {vr.recipe.letters}")
        t0 = time.perf_counter()
        results.append(run_one(vr, device=device, progress=progress, console=console, train_fn=train_fn))
        fresh += 1
        longest = max(longest, time.perf_counter() - t0)
        if on_result is not None:
            on_result(results)
        if console:
            m = results[-1]["ruler"]["mean"]
            ph = results[-1]["phase_s"]
            console.print(f"{tag}: {time.perf_counter() - t0:.0f} s (train {ph['train']:.0f}, RULER {ph['ruler']:.0f}, "
                          f"decode timing {ph['decode_timing']:.0f}); mean score by length "
                          + ", ".join(f"{k}: {v:.1f}" for k, v in m.items()))
    return results
