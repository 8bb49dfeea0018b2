"""``hybrid ruler``: evaluate a trained model on RULER tasks at several lengths."""

from __future__ import annotations

import sys

NAME = "ruler"
HELP = "evaluate a trained model on RULER long-context tasks (per task and length)"
DESCRIPTION = """Evaluate a trained model folder on RULER (NVIDIA, arXiv 2404.06654) tasks.

Each sample is generated offline for the model's own tokenizer, fitted so that the prompt plus the
task's tokens to generate fits the target length, decoded greedily through the model's generate()
(hybrid cache, left-padded batches) and scored with RULER's case-insensitive string match (x100).

Tasks (names or groups, comma separated):
  niah_single_1 niah_single_2 niah_single_3 niah_multikey_1 niah_multikey_2 niah_multikey_3
  niah_multivalue niah_multiquery vt cwe fwe        (offline)
  qa_1 (needs --squad FILE)  qa_2 (needs --hotpotqa FILE)
  groups: all (the 11 offline tasks), niah, synthetic (no essay haystack: exact RULER recipes),
          essay, qa
Essay tasks use a local public-domain essay (or --haystack FILE), not Paul Graham's essays: their
scores are labelled RULER-like and are not comparable with published RULER numbers.

Other models: any Hugging Face causal LM folder (an AutoModelForCausalLM checkpoint saved with its
tokenizer) is evaluated the same way, so a baseline can sit in the same table; it records no training
length, so --lengths (in tokens) is required.

Lengths: tokens (4096, 4k) or multiples of the model's training length (1x 2x 4x).
A task whose template does not fit a length is skipped there with a printed line (so --tasks all
runs at short lengths); the table's footnotes name it, and cells whose haystack is thin.
Samples are reproducible: sample i of a task at a length depends only on (--seed, task, length, i).

examples:
  hybrid ruler runs/tiny-cpu --tasks niah_single_1,vt --lengths 512 1024 2048 --samples 20
  hybrid ruler runs/model --tasks all --lengths 1x 2x 4x --samples 100 --batch-size 16 --out runs/model/ruler
writes OUT/results.json, OUT/predictions.jsonl and OUT/heatmap.png (default OUT: CHECKPOINT/ruler; for
a training checkpoint RUN/checkpoints/step_N: RUN/ruler-step_N).
More in docs/ruler.md.
"""


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="model folder written by `hybrid train`, one of its checkpoints/step_N, "
                                      "a stopped run's folder (its newest checkpoint), or any Hugging Face causal "
                                      "LM folder with its tokenizer (then --lengths is required)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="task names or groups, space or comma separated (default: the eval: section of the "
                        "model's recipe, else all = the 11 offline tasks)")
    p.add_argument("--lengths", nargs="+", default=None, metavar="LEN",
                   help="target lengths: tokens (1024, 4k) or multiples of the training length (2x); "
                        "default 1x 2x 4x when the training length is recorded, else required")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="samples per task and length; 500 narrows a cell's 95%% interval to about ±4 points "
                        "(default: the recipe's eval: section, else 100)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="prompts decoded together (default: the recipe's eval: section, else 8)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default CHECKPOINT/ruler, or RUN/ruler-step_N)")
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    p.add_argument("--haystack", default=None, metavar="FILE", help="essay text file for the essay tasks")
    p.add_argument("--squad", default=None, metavar="FILE", help="local SQuAD v2 dev JSON (enables qa_1)")
    p.add_argument("--hotpotqa", default=None, metavar="FILE", help="local HotpotQA dev-distractor JSON (qa_2)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp32"),
                   help="model dtype (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    from hybrid.blocks.spec import SpecError
    from hybrid.eval.console import console as make_console
    from hybrid.tasks.errors import RulerError

    err = make_console(stderr=True)
    for flag in ("samples", "batch_size"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            err.print(f"[bold red]error:[/] --{flag.replace('_', '-')} {v}: must be >= 1", highlight=False)
            return 2
    from hybrid.device import check_device_name

    check_device_name(args.device)
    try:
        return _run(args)
    except (RulerError, SpecError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        return 2


def _run(args) -> int:
    from pathlib import Path

    from hybrid.eval.config import parse_length, resolve_length
    from hybrid.eval.console import console as make_console
    from hybrid.eval.ruler.checkpoint import (
        check_model_dir,
        is_ours,
        load_checkpoint,
        model_type,
        recipe_eval,
        run_dir,
        training_length,
    )
    from hybrid.eval.ruler.report import save, table
    from hybrid.eval.ruler.runner import evaluate
    from hybrid.tasks import resolve_tasks
    from hybrid.tasks.errors import RulerError
    from hybrid.tasks.haystack import essay_words

    console = make_console()
    ckpt = check_model_dir(args.checkpoint)
    ev = recipe_eval(ckpt)
    held_out = list(ev.held_out) if ev and not args.tasks else []
    tasks = resolve_tasks(args.tasks or (list(ev.tasks) if ev else ["all"]))
    if args.samples is None:
        args.samples = ev.samples if ev else 100
    if args.batch_size is None:
        args.batch_size = ev.batch_size if ev else 8
    args.haystack = args.haystack or (ev.haystack if ev else None)
    if args.samples < 1 or args.batch_size < 1:
        raise RulerError("--samples and --batch-size must be >= 1")
    data = {}
    for t, opt in (("qa_1", "squad"), ("qa_2", "hotpotqa")):
        if t in tasks:
            if not getattr(args, opt):
                raise RulerError(f"task {t} needs a local JSON file: pass --{opt} FILE (nothing is downloaded)")
            data[t] = getattr(args, opt)
    if args.haystack:
        essay_words(args.haystack)  # fail early on a missing or tiny file
    train_len = training_length(ckpt)
    raw = args.lengths or ((list(ev.lengths) if ev else ["1x", "2x", "4x"]) if train_len else None)
    if raw is None:
        what = "records no training length" if is_ours(ckpt) else f"is not a hybrid model (model_type {model_type(ckpt)!r})"
        raise RulerError(f"{ckpt} {what}: --lengths is required, in tokens, e.g. --lengths 1024 2048")
    lengths = []
    for i, v in enumerate(raw):
        v = parse_length(int(v) if str(v).isdigit() else v, f"--lengths[{i}]")
        lengths.append(resolve_length(v, train_len))
    model, tok, _ = load_checkpoint(ckpt, args.device, args.dtype)
    console.print(f"[bold]{ckpt}[/]: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on "
                  f"{next(model.parameters()).device}; tasks {', '.join(tasks)}; lengths {lengths}; "
                  f"{args.samples} samples each" + (f" (trained at {train_len})" if train_len else ""))
    run = evaluate(model, tok, tasks, lengths, args.samples, batch_size=args.batch_size, seed=args.seed,
                   haystack=args.haystack, data=data, progress=not args.no_progress, held_out=held_out,
                   on_skip=lambda m: console.print(f"[yellow]{m}[/]", highlight=False))
    trained_in = run_dir(ckpt)
    out = Path(args.out) if args.out else (ckpt / "ruler" if trained_in == ckpt else
                                           trained_in / f"ruler-{ckpt.name}")
    paths = save(run, out, {"checkpoint": str(ckpt), "training_length": train_len}, title=ckpt.name)
    console.print(table(run, title=f"RULER on {ckpt.name} (score x100, {args.samples} samples per cell)"))
    d = run.to_dict()["decode"]
    console.print(f"decode: {d['generated_tokens']} tokens in {d['seconds']:.1f} s "
                  f"({d['ms_per_generated_token']:.2f} ms per generated token, batch {args.batch_size})")
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))
    sys.stdout.flush()
    return 0
