"""``hybrid demo``: the built-in default job, end to end on whatever machine you have."""

from __future__ import annotations

import time

NAME = "demo"
HELP = "run the built-in default job: operator check, build, train and a RULER ratio sweep (minutes on a CPU)"
DESCRIPTION = """Run the built-in default job on this machine (CPU is fine; a few minutes on two cores).

  1. operator  CARVE on random input with every backend available here (chunked PyTorch; Triton on
               a CUDA GPU) against the float64 token-by-token reference: outputs, final state and
               every gradient, at several decay strengths.
  2. build     `hybrid build recipes/tiny-cpu.yaml`: the tiny 3:1 hybrid, analytic predictions next
               to measured costs.
  3. train     `hybrid train recipes/tiny-cpu.yaml --steps 100`: trains it on the shipped text
               corpus; the summary compares the loss with the unigram baseline of the data.
  4. ruler     `hybrid sweep recipes/sweep-ruler-tiny.yaml` at a demo budget (DEMO_SWEEP below:
               60 training steps, one task, 10 samples): the hybrid-ratio comparison in miniature
               (0, 1 and 2 attention layers of 2), trained on RULER-format samples and evaluated at
               1x, 2x and 4x the training length; a report with plots. At this budget the models
               have not yet learned retrieval (scores near 0); with the sweep file's own 1000 steps
               (--full-sweep; 25 minutes on two shared cores) the all-attention variant does, as
               the file's description records.

Outputs go under --out (default runs/demo). --stages picks a subset, e.g. --stages operator,build.
"""

STAGES = ("operator", "build", "train", "ruler")
TRAIN_STEPS = 100  # stage 3: by step 100 the loss is well below the unigram entropy of the data (5.3 vs 6.3)
# stage 4: recipes/sweep-ruler-tiny.yaml cut to a few minutes on two cores
DEMO_SWEEP = ("train.steps=60", "train.eval_every=30", 'eval.tasks=["niah_single_1:2-digit"]', "eval.samples=10",
              "eval.batch_size=10")


def add_arguments(p) -> None:
    p.add_argument("--length", type=int, default=200, help="sequence length T of the operator check (default 200)")
    p.add_argument("--heads", type=int, default=2, help="heads H (default 2)")
    p.add_argument("--head-dim", type=int, default=16, help="K = V (default 16)")
    p.add_argument("--chunk-size", type=int, default=64, help="chunk size C (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {', '.join(STAGES)}")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--train-steps", type=int, default=TRAIN_STEPS,
                   help=f"training steps of stage 3 (default {TRAIN_STEPS})")
    p.add_argument("--full-sweep", action="store_true",
                   help="stage 4 runs recipes/sweep-ruler-tiny.yaml as shipped (1000 steps, both tasks: "
                        "25 minutes on two shared cores) instead of the demo budget")


def operator_check(args, console) -> bool:
    import torch
    from rich.table import Table

    from hybrid.ops.carve import carve, carve_reference, triton_available
    from hybrid.ops.carve.testing import random_inputs, rel_err

    backends = ["torch"] + (["triton"] if triton_available() else [])
    table = Table(title=f"CARVE vs float64 reference (T={args.length}, H={args.heads}, K=V={args.head_dim}, "
                  f"C={args.chunk_size}, content on, relative RMS error)")
    for col in ("backend", "dtype", "decay", "output", "final S", "worst grad", "fwd+bwd ms"):
        table.add_column(col, justify="right")
    ok = True
    for backend in backends:
        device = "cuda" if backend == "triton" else "cpu"
        dtypes = [torch.float32] + ([torch.bfloat16] if backend == "triton" else [])
        for dtype in dtypes:
            for decay in (0.0, 1.0, 5.0):
                inp = random_inputs(B=1, T=args.length, H=args.heads, K=args.head_dim, V=args.head_dim, r=4,
                                    decay=decay, seed=args.seed)
                ref_in = inp.to(dtype=torch.float64).requires_grad_()
                o_ref, s_ref = carve_reference(*ref_in.args(), chunk_size=args.chunk_size, output_final_state=True)
                do = torch.randn(o_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
                g_ref = torch.autograd.grad((o_ref * do).sum(), list(ref_in.tensors().values()))
                test_in = inp.to(dtype=dtype, device=device).requires_grad_()
                carve(*test_in.args(), chunk_size=args.chunk_size, backend=backend)  # warm-up (compilation)
                t0 = time.perf_counter()
                o, s = carve(*test_in.args(), chunk_size=args.chunk_size, output_final_state=True, backend=backend)
                grads = torch.autograd.grad((o.double() * do.to(device)).sum(), list(test_in.tensors().values()))
                if device == "cuda":
                    torch.cuda.synchronize()
                ms = (time.perf_counter() - t0) * 1e3
                e_o, e_s = rel_err(o.cpu(), o_ref), rel_err(s.S.cpu(), s_ref.S)
                e_g = max(rel_err(g.cpu(), gr) for g, gr in zip(grads, g_ref))
                tol = 1e-5 if dtype == torch.float32 else 1e-2
                ok &= max(e_o, e_s, e_g) < tol
                table.add_row(backend, str(dtype).replace("torch.", ""), f"{decay:g}", f"{e_o:.1e}", f"{e_s:.1e}",
                              f"{e_g:.1e}", f"{ms:.1f}")
    console.print(table)
    console.print("[green]operator agrees with the reference[/]" if ok else "[red]operator DISAGREES with the reference[/]")
    return ok


def _recipe(name: str) -> str:
    """A shipped recipe: from the checkout when run there, else from the installed package data."""
    from pathlib import Path

    here = Path("recipes") / name
    if here.exists():
        return str(here)
    return str(Path(__file__).resolve().parents[2] / "recipes" / name)


def run_command(module, argv: list[str]) -> int:
    """Run one ``hybrid`` subcommand module (``hybrid.commands.<name>``) with command-line arguments."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"hybrid {module.NAME}")
    module.add_arguments(parser)
    return int(module.main(parser.parse_args(argv)) or 0)


def main(args) -> int:
    from pathlib import Path

    from rich.console import Console

    from hybrid.commands import build, sweep, train

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise SystemExit(f"hybrid demo: unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    console = Console()
    out = Path(args.out)
    rc = 0
    if "operator" in stages:
        console.rule("[bold]stage 1: the CARVE operator")
        rc |= 0 if operator_check(args, console) else 1
    if "build" in stages:
        console.rule("[bold]stage 2: build the tiny 3:1 hybrid (predicted vs measured)")
        rc |= run_command(build, [_recipe("tiny-cpu.yaml"), "--out", str(out / "build"), "--batch", "4", "--length", "256"])
    if "train" in stages:
        console.rule("[bold]stage 3: train it on the shipped text corpus")
        cmd = [_recipe("tiny-cpu.yaml"), "--out", str(out / "tiny-cpu")]
        if args.train_steps is not None:
            cmd += ["--steps", str(args.train_steps)]
        rc |= run_command(train, cmd)
    if "ruler" in stages:
        console.rule("[bold]stage 4: hybrid ratios on RULER, in miniature")
        folder = out / ("sweep-full" if args.full_sweep else "sweep")  # a finished run is kept by --resume
        cmd = [_recipe("sweep-ruler-tiny.yaml"), "--out", str(folder), "--resume"]
        if not args.full_sweep:
            console.print("demo budget: " + " ".join(DEMO_SWEEP) + " (the models will not have learned retrieval "
                          "yet; --full-sweep runs the file as shipped)")
            for kv in DEMO_SWEEP:
                cmd += ["--set", kv]
        rc |= run_command(sweep, cmd)
    if rc == 0:
        console.print(f"[green]demo finished[/]; outputs under {out}/")
    return rc
