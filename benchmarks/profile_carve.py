"""Run CARVE (Triton chunk kernels) forward+backward at the benchmark shape, for a profiler to watch.

    python3 benchmarks/profile_carve.py [--T 4096] [--iters 2] [--no-content] [--sass DIR]

B*T = 32768 tokens, H = 16, K = V = 128, bf16, content on (as benchmarks/kernels.py). Each iteration is
one forward and one backward; the first one compiles. After the runs it prints the CarveSettings of the
call and, per compiled chunk kernel, its registers, spill bytes, shared memory and warps; with --sass DIR it also writes each kernel's SASS
there and prints an instruction count (tensor-core, local-memory, global-memory, barrier).
scripts/ncu-carve wraps it in Nsight Compute.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile

import torch

from benchmarks.kernels import make
from hybrid.ops.carve import chunk_bwd, chunk_fwd, chunk_grads
from hybrid.ops.carve.chunk import carve_triton
from hybrid.ops.carve.inputs import validate
from hybrid.ops.carve.settings import choose_settings

KERNELS = {chunk_fwd: ("carve_chunk_prep_kernel", "carve_chunk_fwd_kernel"),
           chunk_bwd: ("carve_chunk_bprep_kernel", "carve_chunk_bwd_kernel"),
           chunk_grads: ("carve_chunk_post_kernel", "carve_chunk_dvw_kernel", "carve_chunk_du_kernel",
                         "carve_chunk_du_sum_kernel")}
SASS_OPS = ("HGMMA", "HMMA", "LDL", "STL", "LDG", "STG", "LDS", "STS", "LDSM", "STSM", "BAR", "MUFU", "CCTL")


def compiled():
    """(name, CompiledKernel) for every chunk kernel compiled in this process."""
    for module, names in KERNELS.items():
        for name in names:
            yield from _compiled(name, getattr(module, name))


def _compiled(name, fn):
    for per_device in fn.device_caches.values():
        cache = per_device[0] if isinstance(per_device, tuple) else per_device
        for ck in cache.values():
            yield name, ck


def sass_counts(ck, name, out_dir):
    tool = os.path.join(os.path.dirname(__import__("triton").__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(ck.asm["cubin"])
        sass = subprocess.run([tool, "-sass", path], capture_output=True, text=True).stdout
    with open(os.path.join(out_dir, f"{name}.sass"), "w") as f:
        f.write(sass)
    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m:
            ops[m.group(1)] += 1
    return {op: sum(v for k, v in ops.items() if k == op or k.startswith(op + "_") or k.startswith(op + "."))
            for op in SASS_OPS} | {"total": sum(ops.values())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--iters", type=int, default=2, help="forward+backward runs (the first compiles)")
    ap.add_argument("--no-content", action="store_true", help="content off (U_down, U_up omitted)")
    ap.add_argument("--sass", metavar="DIR", help="write each kernel's SASS to DIR and print instruction counts")
    args = ap.parse_args()
    H, K, V = 16, 128, 128
    B = args.tokens // args.T
    x = make(B, args.T, H, K, V)
    names = ["q", "k", "v", "g", "a", "w_s"] + ([] if args.no_content else ["ud", "uu"])
    leaves = [x[n].requires_grad_(True) for n in names]
    ud, uu = (None, None) if args.no_content else (x["ud"], x["uu"])
    do = None
    for _ in range(args.iters):
        for t in leaves:
            t.grad = None
        o = carve_triton(x["q"], x["k"], x["v"], x["g"], x["a"], x["w_s"], ud, uu, chunk_size=64)[0]
        if do is None:
            do = torch.randn_like(o)
        o.backward(do)
    torch.cuda.synchronize()
    args64 = (x["q"], x["k"], x["v"], x["g"], x["a"], x["w_s"], ud, uu)
    shapes = validate(*args64, chunk_size=64, content_grad="full", initial_state=None, cu_seqlens=None)
    print("settings", choose_settings(shapes, x["q"].dtype, x["q"].device, 64).as_dict(), flush=True)
    if args.sass:
        os.makedirs(args.sass, exist_ok=True)
    for name, ck in compiled():
        info = dict(regs=getattr(ck, "n_regs", None), spills=getattr(ck, "n_spills", None),
                    shared=ck.metadata.shared, warps=ck.metadata.num_warps)
        if args.sass:
            info["sass"] = sass_counts(ck, name, args.sass)
        print(name, info, flush=True)


if __name__ == "__main__":
    main()
