"""``hybrid sweep``: train and compare the variants of a sweep file on RULER."""

from __future__ import annotations

NAME = "sweep"
HELP = "train every variant of a sweep (e.g. hybrid ratios) and compare them on RULER in one report"
DESCRIPTION = """Train each variant of a sweep file (a base recipe plus the keys it varies, e.g. the
attention ratio and the attention positions) on its training data, evaluate every variant on RULER at the
lengths of the recipe's eval: section (default 1x, 2x and 4x the training length), measure training
throughput and decoding speed, and write one report next to the analytic predictions:

  OUT/report.md          scores per task and length, costs, the largest difference between variants
  OUT/report.json        the same, machine-readable
  OUT/score_vs_ratio.png score vs attention share, one line per evaluation length
  OUT/frontier.png       mean score at the longest length vs decode ms/token and training tokens/s
  OUT/runs/VARIANT/seedS/{model,ruler,result.json}

The report is rewritten after every finished run, so a sweep that is stopped (Ctrl-C, a time limit)
still has one for the runs it finished; --time-budget stops starting runs before a limit.
--seeds 0,1,2 (or sweep.seeds: [0, 1, 2] in the sweep file) trains every variant once per seed S
(train.seed + S; the evaluation samples stay the same) and reports mean ± std over seeds; --seeds N
is short for 0..N-1.
An interrupted sweep continues with --resume: finished (variant, seed) runs are kept, a half-trained
model resumes from its last checkpoint.

examples:
  hybrid sweep recipes/sweep-ruler-tiny.yaml --out runs/sweep-tiny           (CPU, ~25 min)
  hybrid sweep recipes/sweep-ruler-h200.yaml --out runs/sweep-h200           (one H200, ~25-30 min est.)
  hybrid sweep recipes/sweep-ruler-tiny.yaml --out runs/sweep-tiny --resume
  hybrid sweep recipes/sweep-ruler-h200.yaml --time-budget 540   (report whatever finished in 9 min)
"""


def add_arguments(p) -> None:
    p.add_argument("sweep", help="sweep YAML file (see docs/recipes.md); a plain recipe runs as one variant")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default runs/<sweep name>)")
    p.add_argument("--seeds", default=None, metavar="S,S,...|N",
                   help="training seeds, e.g. 0,1,2 (a single number N means 0..N-1); default: the sweep "
                        "file's sweep.seeds, else 0")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="RULER samples per task and length for every variant (same as --set eval.samples=N; "
                        "500 gives 95%% intervals of about ±4 points)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a recipe key in every variant, e.g. --set train.steps=50 (repeatable)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="do not start another run when the time spent plus the longest run so far would "
                        "exceed SECONDS; the report covers the finished runs, --resume adds the rest")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_seed_option(text: str | None) -> list[int] | int | None:
    """``--seeds``: ``0,1,2`` -> [0, 1, 2]; ``3`` -> 3 (a count, 0..2); None stays None."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"--seeds {text!r}: expected seeds like 0,1,2 or a count like 3")
    if "," not in str(text):
        if int(parts[0]) < 1:
            raise ValueError("--seeds must be >= 1 (a count), or a list like 0,1,2")
        return int(parts[0])
    return [int(p) for p in parts]


def main(args) -> int:
    import time
    from pathlib import Path

    from hybrid.blocks.spec import SpecError
    from hybrid.eval.console import console as make_console
    from hybrid.recipes import RecipeError
    from hybrid.sweep.report import write_report
    from hybrid.sweep.runner import SweepError, run_sweep
    from hybrid.tasks.errors import RulerError

    console, err = make_console(), make_console(stderr=True)
    try:
        seeds = parse_seed_option(args.seeds)
    except ValueError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    if args.samples is not None:
        if args.samples < 1:
            err.print("[bold red]error:[/] --samples must be >= 1")
            return 2
        args.overrides = [*args.overrides, f"eval.samples={args.samples}"]
    if not Path(args.sweep).is_file():
        err.print(f"[bold red]error:[/] sweep file not found: {args.sweep}")
        return 2
    name = Path(args.sweep).stem
    out = Path(args.out) if args.out else Path("runs") / name
    t0 = time.perf_counter()
    if args.time_budget is not None and args.time_budget <= 0:
        err.print("[bold red]error:[/] --time-budget must be > 0 seconds")
        return 2
    skipped: list[str] = []

    done: list[dict] = []

    def meta(**extra) -> dict:
        return {"name": name, "sweep": args.sweep, "seeds": sorted({r["seed"] for r in done}) if done else seeds,
                "overrides": args.overrides,
                "wall_s_this_invocation": time.perf_counter() - t0, **extra}

    def partial_report(results):  # after every finished run, so that a killed sweep still has a report
        done[:] = results
        write_report(results, out, meta(in_progress=f"written after {len(results)} finished run(s); "
                                                    "the sweep was still running"))

    try:
        results = run_sweep(args.sweep, out, seeds=seeds, resume=args.resume, overrides=args.overrides,
                            device=args.device, progress=not args.no_progress, console=console,
                            time_budget_s=args.time_budget, skipped=skipped, on_result=partial_report)
    except (SweepError, RecipeError, SpecError, RulerError, FileExistsError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err.print(f"\ninterrupted; finished runs are kept in {out}. Continue with: "
                  f"hybrid sweep {args.sweep} --out {out} --resume")
        return 130
    if not results:
        err.print("[bold red]error:[/] no run finished within the time budget; nothing to report")
        return 1
    done[:] = results
    paths = write_report(results, out, meta(**({"not_run (time budget)": skipped} if skipped else {})))
    others = ", ".join(p.name for k, p in paths.items() if k != "md")
    console.print(f"sweep done in {time.perf_counter() - t0:.0f} s; report: {paths['md']} (+ {others})")
    return 0
