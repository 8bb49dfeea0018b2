"""Compile the v2 kernels for sm_90 without a GPU and report registers, spill stack and shared memory.

Uses Triton's bundled ptxas/cuobjdump, so it runs on a CUDA-less machine (the numbers come from this
machine's Triton, which may differ from the device's). The shape is the benchmark's: K = V = 128,
r = 16, bf16, content on, scalar w, on the dispatched defaults: 32-row tiles (SUB = 2 per 64-token content
chunk), post-pass on 64 key columns, prep and post capped at 128 registers.

    .venv/bin/python -m hybrid.kernels.triton_v2_compile [--warps N] [--stages 1] [--kernels fwd bwd] [--dec-bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from . import triton_v2_kernels as kk
from .triton_v2 import (
    DEC_MODES,
    DEFAULT_TILE_ROWS,
    _par_warps,
    _post_columns,
    _seq_warps,
    par_maxnreg,
    prep_maxnreg,
)
from .triton_v2_bwdt import carve_v2_bwdt_kernel

INT_PTRS = {"pos0", "seq_start", "seq_len", "chunk_off", "cseq", "cj"}
DATA_PTRS = {"q", "k", "v", "a", "w", "o", "do", "da", "dv", "dw", "dq", "dk"}  # in the input dtype


def _signature(fn, const: dict, dtype: str, state_bf16: bool = False) -> dict:
    sig = {}
    for name in fn.arg_names:
        if name == "hbuf" and state_bf16:
            sig[name] = "*bf16"
        elif name in ("Pb", "abuf", "ubuf", "w1b", "dsb", "gbuf"):  # kept in bf16 when the products take bf16 operands
            sig[name] = "*bf16" if const.get("LOWP", dtype == "bf16") else "*fp32"
        elif name in const:
            sig[name] = "constexpr"
        elif name == "scale":
            sig[name] = "fp32"
        elif name == "H":
            sig[name] = "i32"
        elif name in ("de_part", "dm_part", "dc_part"):
            sig[name] = "i64"
        elif name == "xflag":
            sig[name] = "*i32"
        elif name in INT_PTRS:
            sig[name] = "*i64"
        elif name in DATA_PTRS:
            sig[name] = "*" + dtype
        else:
            sig[name] = "*fp32"
    return sig


def compile_one(which: str, warps: int, stages: int, dtype: str = "bf16", dec: int = 0,
                overrides: dict | None = None, maxnreg: int | None = None, state_bf16: bool = False) -> dict:
    C = DEFAULT_TILE_ROWS  # the dispatched tile: 32 rows, SUB = 64 // 32 tiles per content chunk
    base = dict(K=128, C=C, NB=C // 16, LOG2C=C.bit_length() - 1, BK=128, HAS_INIT=False, DEC=dec,
                GATHER=False, UNR=1)
    full = dict(base, V=128, R=16, BV=128, BR=16, HAS_CONTENT=True, NV=1)
    lowp = dtype == "bf16"
    fn, const = {
        "prep": (kk.carve_v2_prep_kernel, dict(base, PREC="tf32")),
        "fwd": (kk.carve_v2_fwd_kernel, dict(full, SUB=64 // C, VEC_W=False, LOWP=lowp, PREC="tf32",
                                             PREC_INV="tf32" if lowp else "ieee")),
        "bprep": (kk.carve_v2_bprep_kernel, dict(K=128, V=128, C=C, BK=128, BV=128, HAS_INIT=False, LOWP=lowp,
                                                 PREC="tf32")),
        "bwd": (kk.carve_v2_bwd_kernel, dict(full, SUB=64 // C, FULL_CONTENT_GRAD=True, VEC_W=False, HAS_DHT=False,
                                             HAS_DMF=False, HAS_DOSF=False, LOWP=lowp, PREC="tf32", DS_OUT=True)),
        "bwdt": (carve_v2_bwdt_kernel, dict({k: v for k, v in full.items() if k != "GATHER"}, SUB=64 // C,
                                             FULL_CONTENT_GRAD=True, VEC_W=False, HAS_DHT=False, HAS_DMF=False,
                                             HAS_DOSF=False, LOWP=lowp, PREC="tf32", HOLD_U=True)),
        "post": (kk.carve_v2_post_kernel, dict(full, PREC="tf32", BKP=_post_columns(128), LOWP=lowp, DS_OUT=True)),
    }[which]
    const = {k: v for k, v in {**const, **(overrides or {})}.items() if k in fn.arg_names}
    src = ASTSource(fn=fn, signature=_signature(fn, const, dtype, state_bf16),
                    constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    t0 = time.time()
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages, **({"maxnreg": maxnreg} if maxnreg else {})))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(ck.asm["cubin"])
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    line = next((ln.strip() for ln in usage.splitlines() if "REG:" in ln), "")
    fields = dict(tok.split(":", 1) for tok in line.split() if ":" in tok)
    ptx = ck.asm["ptx"]
    return dict(kernel=which, num_warps=warps, num_stages=stages, dtype=dtype, dec=dec,
                overrides=overrides or {}, regs=int(fields.get("REG", -1)),
                stack_bytes=int(fields.get("STACK", -1)), shared_bytes=ck.metadata.shared,
                wgmma=ptx.count("wgmma.mma_async"), compile_s=round(time.time() - t0, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", nargs="*", default=["prep", "fwd", "bprep", "bwdt", "post"],
                    help="bwdt: the transposed backward sweep (dispatched); bwd: the [C, *] one")
    ap.add_argument("--warps", type=int, default=None, help="warps of every kernel (default: as dispatched)")
    ap.add_argument("--stages", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--dec", choices=sorted(DEC_MODES), default=None,
                    help="operands of the decayed products (as dispatched: fp16 with bf16 inputs, else fp32)")
    ap.add_argument("--state", choices=["bf16", "fp32"], default=None,
                    help="dtype of the saved chunk-start states (as dispatched: bf16 with bf16 inputs, else fp32)")
    ap.add_argument("--maxnreg", type=int, default=None,
                    help="register cap per thread (the dispatcher caps prep and post at 128: HYBRID_CARVE_V2_PAR_MAXNREG)")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="override constexprs, e.g. VEC_W=1 HAS_CONTENT=0 K=48 BK=64 (ints; 0/1 for flags)")
    args = ap.parse_args()
    flags = {"HAS_INIT", "HAS_CONTENT", "VEC_W", "LOWP", "FULL_CONTENT_GRAD", "HAS_DHT", "HAS_DMF", "HAS_DOSF",
             "GATHER", "DS_OUT", "HOLD_U"}
    overrides = {}
    for item in args.set:
        name, val = item.split("=", 1)
        overrides[name] = bool(int(val)) if name in flags else (int(val) if val.lstrip("-").isdigit() else val)
    dec = DEC_MODES[args.dec or ("fp16" if args.dtype == "bf16" else "fp32")]
    for which in args.kernels:
        cap = args.maxnreg
        if cap is None and which in ("prep", "bprep", "post"):
            cap = (prep_maxnreg() if which == "prep" else par_maxnreg()) or None  # as dispatched
        warps = args.warps or dict(zip(("prep", "bprep", "post"), _par_warps())).get(which, _seq_warps())
        print(json.dumps(compile_one(which, warps, args.stages, args.dtype, dec, overrides, cap,
                                     (args.state or ("bf16" if args.dtype == "bf16" else "fp32")) == "bf16")),
              flush=True)


if __name__ == "__main__":
    main()
