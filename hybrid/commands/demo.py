"""``hybrid demo``: the built-in default job, end to end on whatever machine you have."""

from __future__ import annotations

import time

NAME = "demo"
HELP = "run the built-in default job: check the CARVE operator against its reference"
DESCRIPTION = """Run the built-in default job on this machine (CPU is fine).

Stage 1 (operator): runs CARVE on random input with every backend available here (chunked PyTorch;
Triton on a CUDA GPU) and prints its agreement with the float64 token-by-token reference: outputs,
final state and every gradient, at several decay strengths, plus a timing.
"""


def add_arguments(p) -> None:
    p.add_argument("--length", type=int, default=200, help="sequence length T of the operator check (default 200)")
    p.add_argument("--heads", type=int, default=2, help="heads H (default 2)")
    p.add_argument("--head-dim", type=int, default=16, help="K = V (default 16)")
    p.add_argument("--chunk-size", type=int, default=64, help="chunk size C (default 64)")
    p.add_argument("--seed", type=int, default=0)


def operator_check(args, console) -> bool:
    import torch
    from rich.table import Table

    from hybrid.kernels import carve, carve_reference, triton_available
    from hybrid.kernels.testing import random_inputs, rel_err

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


def main(args) -> int:
    from rich.console import Console

    console = Console()
    console.rule("[bold]stage 1: the CARVE operator")
    ok = operator_check(args, console)
    return 0 if ok else 1
