"""Kernel benchmark on one GPU: CARVE (Triton) against fla's chunk kernels and SDPA attention.

B*T = 32768 tokens, H = 16, K = V = 128, bf16, T in {2048, 4096, 8192, 16384}. Times are medians of
triton.testing.do_bench (ms); fwd is the forward alone, fwd+bwd a forward and a backward; peak is the
peak allocated memory of one fwd+bwd above what the inputs already hold (MiB). Prints a table of
ratios to fla ``chunk_gdn2`` and writes JSON.

    PYTHONPATH=. python3 benchmarks/kernels.py --json out/kernels.json
    PYTHONPATH=. python3 benchmarks/kernels.py --T 4096 --only all --profile --json out/kernels-4096.json

Each CARVE row records the ``CarveSettings`` its calls ran with (``settings``), so a result says which
code produced it; ``--carve-settings FIELD=VALUE ...`` runs them with fields changed (to time a choice
against the chosen value in one run).

The long-context table (``--long``, or ``--shapes BxHxT,...``): B = 1, H in {8, 16}, T in {4K, 32K, 64K,
128K}, K = V = 128; CARVE content on and off, fla's chunk_gdn2, chunk_kda and chunk_gated_delta_rule, and
cuDNN attention as the model's attention layer (16 query / 4 key-value heads of 64). The forward is
timed without gradients (prefill), then forward + backward; ms, ns per token, fwd+bwd ratios to
chunk_gdn2 and to the attention, and the targets (CARVE at 1x16x32768 against both; the spread of its
time per token over T at each B H). Results go to the JSON's ``long``.

    PYTHONPATH=. python3 benchmarks/kernels.py --long --time-limit 900 --json out/kernels-long.json
    PYTHONPATH=. python3 benchmarks/kernels.py --shapes 1x16x32768 --only carve_content \\
        --carve-settings value_split=4 --json out/split4.json

fla (``fla-core`` / ``flash-linear-attention`` 0.6.0) is optional; without it only CARVE and SDPA run.
fla refuses its gated backward on Hopper with Triton < 3.7.1; the script bypasses that guard for
TIMING ONLY (its gradients there are not trustworthy).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import subprocess
import sys

import torch
import torch.nn.functional as F


def _fla():
    try:
        import fla.ops.common.chunk_o as chunk_o
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule
        from fla.ops.gdn2 import chunk_gdn2
        from fla.ops.kda import chunk_kda
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        print(f"fla not available: {exc!r}", file=sys.stderr)
        return None
    chunk_o.TRITON_ABOVE_3_7_1 = True  # timing only, see the module docstring
    import fla

    return dict(chunk_gdn2=chunk_gdn2, chunk_kda=chunk_kda, chunk_gated_delta_rule=chunk_gated_delta_rule,
                version=getattr(fla, "__version__", "?"))


def make(B, T, H, K, V, *, dev="cuda", dt=torch.bfloat16, seed=0):
    g0 = torch.Generator(device=dev)
    g0.manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=dev, generator=g0)
    q = F.normalize(r(B, T, H, K), dim=-1).to(dt)
    k = F.normalize(r(B, T, H, K), dim=-1).to(dt)
    v = r(B, T, H, V).to(dt)
    g = (-F.softplus(r(B, T, H, K) - 2.0)).to(dt)  # log-decay, typical block values (mean about -0.13)
    a = r(B, T, H, K).to(dt)
    w_s = torch.sigmoid(r(B, T, H)).to(dt)
    w_v = torch.sigmoid(r(B, T, H, V)).to(dt)
    ud = (r(H, 16, V) / V**0.5).to(dt)
    uu = (r(H, K, 16) / 4).to(dt)
    return dict(q=q, k=k, v=v, g=g, a=a, w_s=w_s, w_v=w_v, ud=ud, uu=uu)


CARVE_VARIANTS = {  # name: (write gate, content on, chunk size)
    "carve_content": ("w_s", True, 64),
    "carve_nocontent": ("w_s", False, 64),
    "carve_gdn2_mode": ("w_v", False, 64),
    # 32-token chunks: with content off the operator does not depend on the chunk size, so these time the
    # same function on its smaller grid; carve_content_c32 is the operator with a 32-token content lag
    "carve_content_c32": ("w_s", True, 32),
    "carve_nocontent_c32": ("w_s", False, 32),
    "carve_gdn2_mode_c32": ("w_v", False, 32),
}


def carve_args(x, name):
    """(positional inputs, chunk size) of a CARVE variant."""
    w_key, content, C = CARVE_VARIANTS[name]
    ud, uu = (x["ud"], x["uu"]) if content else (None, None)
    return (x["q"], x["k"], x["v"], x["g"], x["a"], x[w_key], ud, uu), C


def carve_settings(x, name, override: dict | None = None):
    """The CarveSettings the Triton operator runs this variant's inputs with: what it chooses, with the
    fields of ``override`` changed (--carve-settings)."""
    from dataclasses import replace

    from hybrid.ops.carve.inputs import validate
    from hybrid.ops.carve.settings import choose_settings

    args, C = carve_args(x, name)
    shapes = validate(*args, chunk_size=C, content_grad="full", initial_state=None, cu_seqlens=None)
    return replace(choose_settings(shapes, args[0].dtype, args[0].device, C), **(override or {}))


def variants(x, fla, override: dict | None = None):
    from hybrid.ops.carve.chunk import carve_triton

    out = {}
    for name in CARVE_VARIANTS:
        args, C = carve_args(x, name)
        leaves = ["q", "k", "v", "g", "a", CARVE_VARIANTS[name][0]] + (["ud", "uu"] if args[6] is not None else [])
        st = carve_settings(x, name, override) if override else None
        out[name] = ((lambda args=args, C=C, st=st: carve_triton(*args, scale=None, chunk_size=C, settings=st)[0]),
                     leaves)
    if fla is not None:
        out["fla_chunk_gdn2"] = (lambda: fla["chunk_gdn2"](x["q"], x["k"], x["v"], x["g"], torch.sigmoid(x["a"]),
                                                           x["w_v"])[0],
                                 ["q", "k", "v", "g", "a", "w_v"])
        out["fla_chunk_kda"] = (lambda: fla["chunk_kda"](x["q"], x["k"], x["v"], x["g"], x["w_s"])[0],
                                ["q", "k", "v", "g", "w_s"])
        out["fla_chunk_gdn"] = (lambda: fla["chunk_gated_delta_rule"](x["q"], x["k"], x["v"], x["g"][..., 0],
                                                                      x["w_s"])[0],
                                ["q", "k", "v", "g", "w_s"])
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def sdpa(backend):
        def f():  # transposed inside, so that the backward reaches the leaves q, k, v
            qa, ka, va = (x[n].transpose(1, 2) for n in ("q", "k", "v"))
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qa, ka, va, is_causal=True)
        return f

    out["sdpa_cudnn"] = (sdpa(SDPBackend.CUDNN_ATTENTION), ["q", "k", "v"])
    out["sdpa_flash"] = (sdpa(SDPBackend.FLASH_ATTENTION), ["q", "k", "v"])
    if "gq" in x:
        def gqa():  # the model's attention layer: 16 query heads, 4 key/value heads of 64 (cuDNN takes GQA as is)
            qa, ka, va = (x[n].transpose(1, 2) for n in ("gq", "gk", "gv"))
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(qa, ka, va, is_causal=True, enable_gqa=True)

        out["sdpa_cudnn_gqa"] = (gqa, ["gq", "gk", "gv"])
    return out


# what issue #3 asks of one run: the three CARVE modes and the anchors (the default of --only)
TABLE = ["carve_content", "carve_nocontent", "carve_gdn2_mode", "fla_chunk_gdn2", "fla_chunk_kda", "fla_chunk_gdn",
         "sdpa_cudnn", "sdpa_flash"]


def target_lines(res: dict) -> list[str]:
    """The issue's targets at one T from its results: CARVE content on against fla chunk_gdn2 and
    chunk_kda (fwd+bwd), the content overhead over content off, and the peak against chunk_gdn2.
    Only what was measured; nothing when CARVE content on was not."""
    on = res.get("carve_content", {})
    if "fwdbwd_ms" not in on:
        return []
    out = []
    for ref in ("fla_chunk_gdn2", "fla_chunk_kda"):
        r = res.get(ref, {})
        if "fwdbwd_ms" in r:
            out.append(f"content on vs {ref[4:]}: {on['fwdbwd_ms'] / r['fwdbwd_ms']:.3f}x fwd+bwd")
    off = res.get("carve_nocontent", {})
    if "fwdbwd_ms" in off:
        out.append(f"content overhead: {100 * (on['fwdbwd_ms'] / off['fwdbwd_ms'] - 1):+.1f}% fwd+bwd over content off")
    g = res.get("fla_chunk_gdn2", {})
    if "peak_mib" in g and "peak_mib" in on:
        out.append(f"peak memory vs chunk_gdn2: {on['peak_mib'] / g['peak_mib']:.2f}x")
    return out


def table_lines(res: dict) -> list[str]:
    """The printed table of one T: each variant with its ratios to fla chunk_gdn2, its CARVE settings and,
    if profiled, its kernels of 0.05 ms or more; then the targets (target_lines)."""
    ref = res.get("fla_chunk_gdn2", {})
    out = []
    for name, r in res.items():
        if "error" in r:
            out.append(f"  {name:18s} ERROR {r['error'][:120]}")
            continue
        rf = r["fwd_ms"] / ref["fwd_ms"] if "fwd_ms" in ref else float("nan")
        rb = r["fwdbwd_ms"] / ref["fwdbwd_ms"] if "fwdbwd_ms" in ref else float("nan")
        out.append(f"  {name:18s} fwd {r['fwd_ms']:8.3f} ({rf:5.2f})  fwd+bwd {r['fwdbwd_ms']:8.3f} ({rb:5.2f})"
                   f"  peak {r['peak_mib']:8.0f}")
        if "settings" in r:
            out.append("      settings " + " ".join(f"{k}={v}" for k, v in r["settings"].items()))
        for kname, ms in r.get("kernels_ms", {}).items():
            if ms >= 0.05:
                out.append(f"      {ms:8.3f} ms  {kname[:90]}")
    return out + [f"  -> {line}" for line in target_lines(res)]


# the long-context table (--long): one sequence, few heads, long T; forward alone is timed as a prefill
LONG_SHAPES = [(1, H, T) for H in (8, 16) for T in (4096, 32768, 65536, 131072)]
LONG_TABLE = ["carve_content", "carve_nocontent", "fla_chunk_gdn2", "fla_chunk_kda", "fla_chunk_gdn",
              "sdpa_cudnn_gqa"]


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """'1x8x32768,1x16x65536' -> [(B, H, T), ...]."""
    out = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise SystemExit(f"--shapes: expected BxHxT with positive integers, got {item!r}")
        out.append(tuple(int(p) for p in parts))
    return out


def make_long(B, T, H, K, V):
    """make() plus the inputs of the model's attention layer: 16 query and 4 key/value heads of 64."""
    x = make(B, T, H, K, V)
    g0 = torch.Generator(device="cuda")
    g0.manual_seed(1)
    for name, heads in (("gq", 16), ("gk", 4), ("gv", 4)):
        x[name] = torch.randn(B, T, heads, 64, device="cuda", generator=g0).to(torch.bfloat16)
    return x


def per_token(row: dict, tokens: int) -> dict:
    """Adds ns per token of the forward and of the fwd+bwd to a measured row."""
    if "fwd_ms" in row:
        row["fwd_ns_per_token"] = row["fwd_ms"] * 1e6 / tokens
        row["fwdbwd_ns_per_token"] = row["fwdbwd_ms"] * 1e6 / tokens
    return row


def long_table_lines(key: str, res: dict) -> list[str]:
    """One shape of the long-context table: ms and ns per token, fwd+bwd ratios to fla chunk_gdn2 and to
    cuDNN GQA attention, peak MiB, and the CARVE settings."""
    ref = res.get("fla_chunk_gdn2", {}).get("fwdbwd_ms", float("nan"))
    att = res.get("sdpa_cudnn_gqa", {}).get("fwdbwd_ms", float("nan"))
    out = [f"{key} (BxHxT)   prefill ms  ns/tok | fwd+bwd ms  ns/tok | /gdn2  /attn | peak MiB"]
    for name, r in res.items():
        if "error" in r:
            out.append(f"  {name:16s} ERROR {r['error'][:120]}")
            continue
        out.append(f"  {name:16s} {r['fwd_ms']:10.3f} {r['fwd_ns_per_token']:7.1f} | {r['fwdbwd_ms']:10.3f}"
                   f" {r['fwdbwd_ns_per_token']:7.1f} | {r['fwdbwd_ms'] / ref:5.2f}  {r['fwdbwd_ms'] / att:5.2f}"
                   f" | {r['peak_mib']:8.0f}")
        if "settings" in r:
            out.append("      settings " + " ".join(f"{k}={v}" for k, v in r["settings"].items()))
        for kname, ms in r.get("kernels_ms", {}).items():
            if ms >= 0.05:
                out.append(f"      {ms:8.3f} ms  {kname[:90]}")
    return out


def long_target_lines(results: dict) -> list[str]:
    """The long-context targets from what was measured: CARVE content on at B = 1, H = 16, T = 32768
    against fla chunk_gdn2 (target <= 1.0x) and cuDNN GQA attention (goal <= 0.6x), fwd+bwd; and per
    B H the spread of CARVE's time per token over T (max / min; target <= 1.3 at B H = 16)."""
    out = []
    at = results.get("1x16x32768", {})
    on = at.get("carve_content", {})
    for ref, bound in (("fla_chunk_gdn2", 1.0), ("sdpa_cudnn_gqa", 0.6)):
        if "fwdbwd_ms" in on and "fwdbwd_ms" in at.get(ref, {}):
            out.append(f"1x16x32768 content on vs {ref}: {on['fwdbwd_ms'] / at[ref]['fwdbwd_ms']:.3f}x fwd+bwd "
                       f"({'target' if bound == 1.0 else 'goal'} <= {bound})")
    spread: dict[int, list[tuple[int, dict]]] = {}
    for key, res in results.items():
        B, H, T = (int(v) for v in key.split("x"))
        if "fwdbwd_ns_per_token" in res.get("carve_content", {}):
            spread.setdefault(B * H, []).append((T, res["carve_content"]))
    for bh, rows in sorted(spread.items()):
        if len(rows) < 2:
            continue
        for col, what in (("fwd_ns_per_token", "prefill"), ("fwdbwd_ns_per_token", "fwd+bwd")):
            vals = [r[col] for _, r in rows]
            ts = ",".join(str(t) for t, _ in sorted(rows, key=lambda tr: tr[0]))
            out.append(f"B*H={bh} content on {what} ns/token over T={ts}: max/min {max(vals) / min(vals):.2f}"
                       + (" (target <= 1.3)" if what == "fwd+bwd" and bh == 16 else ""))
    return out


def run_long(args, fla, info, time_left) -> None:
    """The long-context table: every shape of args.shapes (BxHxT), the variants of args.only."""
    import time

    only = args.only if args.only is not None else LONG_TABLE
    override = parse_settings(args.carve_settings)
    info["long"] = {}
    for B, H, T in args.shapes:
        key = f"{B}x{H}x{T}"
        if not time_left():
            print(f"time limit: {key} not started", flush=True)
            continue
        x = make_long(B, T, H, 128, 128)
        res = {}
        for name, (fn, names) in variants(x, fla, override).items():
            if "all" not in only and name not in only:
                continue
            if not time_left():
                res[name] = dict(error="not measured: --time-limit reached")
                print(key, name, res[name], flush=True)
                continue
            t0 = time.perf_counter()
            try:
                res[name] = per_token(bench_one(fn, names, x, prefill=True), B * T)
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                res[name] = dict(error=repr(exc)[:300])
            if name in CARVE_VARIANTS:
                res[name]["settings"] = carve_settings(x, name, override).as_dict()
            if args.profile and name in CARVE_VARIANTS and "error" not in res[name]:
                res[name]["kernels_ms"] = kernel_times(fn, names, x)
            res[name]["wall_s"] = round(time.perf_counter() - t0, 1)
            print(key, name, res[name], flush=True)
            torch.cuda.empty_cache()
        info["long"][key] = res
        del x
        torch.cuda.empty_cache()
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    print(f"\nCARVE long context | {info['device']} | torch {info['torch']} | triton {info['triton']} | fla {info['fla']}")
    print("K = V = 128 (attention: 16 query / 4 kv heads x 64), bf16; prefill = forward without gradients; median ms")
    for key, res in info["long"].items():
        print("\n".join(long_table_lines(key, res)))
    print("\n".join(f"  -> {line}" for line in long_target_lines(info["long"])))


def parse_settings(items) -> dict:
    """--carve-settings FIELD=VALUE ... -> {field: int, bool or str}, checked against CarveSettings."""
    from dataclasses import fields

    from hybrid.ops.carve.settings import CarveSettings

    kinds = {f.name: f.type for f in fields(CarveSettings)}
    out = {}
    for item in items or []:
        name, _, val = item.partition("=")
        if name not in kinds or not val:
            raise SystemExit(f"--carve-settings: expected FIELD=VALUE with FIELD one of {sorted(kinds)}, got {item!r}")
        kind = kinds[name] if isinstance(kinds[name], str) else kinds[name].__name__
        out[name] = int(val) if kind == "int" else (val.lower() in ("1", "true")) if kind == "bool" else val
    return out


@contextlib.contextmanager
def _grad_leaves(x, names):
    """The inputs `names` of `x` as leaves that take gradients, for the duration; yields them."""
    leaves = [x[n] for n in names]
    for t in leaves:
        t.requires_grad_(True)
    try:
        yield leaves
    finally:
        for t in leaves:
            t.grad = None
            t.requires_grad_(False)


def kernel_times(fn, names, x, reps=5):
    """CUDA time per kernel (ms per fwd+bwd, summed over launches), from the torch profiler."""
    from torch.profiler import ProfilerActivity, profile

    with _grad_leaves(x, names) as leaves:
        do = torch.randn_like(fn())
        fn().backward(do)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                for t in leaves:  # as do_bench's grad_to_none: no gradient accumulation kernels in the profile
                    t.grad = None
                fn().backward(do)
            torch.cuda.synchronize()
    rows = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None)
        if us is None:
            us = ev.cuda_time_total
        if us > 0:
            rows[ev.key] = round(us / reps / 1000, 4)
    return dict(sorted(rows.items(), key=lambda kv: -kv[1])[:12])


def bench_one(fn, names, x, prefill=False):
    """Median fwd and fwd+bwd ms and the fwd+bwd peak (MiB above the inputs). ``prefill``: the forward
    is timed without gradients (inference), else with the leaves requiring them (training)."""
    import triton.testing as tt

    t_pre = None
    if prefill:
        with torch.no_grad():
            fn()
            torch.cuda.synchronize()
            t_pre = tt.do_bench(fn, warmup=25, rep=100, return_mode="median")
    with _grad_leaves(x, names) as leaves:
        o = fn()
        do = torch.randn_like(o)

        def fwd():
            return fn()

        def fwdbwd():
            fn().backward(do)

        fwdbwd()
        torch.cuda.synchronize()
        t_f = t_pre if prefill else tt.do_bench(fwd, warmup=25, rep=100, return_mode="median")
        t_fb = tt.do_bench(fwdbwd, warmup=25, rep=150, grad_to_none=leaves, return_mode="median")
        for t in leaves:
            t.grad = None
        del o
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwdbwd()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return dict(fwd_ms=t_f, fwdbwd_ms=t_fb, peak_mib=peak)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="kernels.json")
    ap.add_argument("--T", type=int, nargs="*", default=[4096, 2048, 8192, 16384])
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--only", nargs="*", default=TABLE,
                    help="variant names to run (default: the issue's table, " + " ".join(TABLE)
                         + "; 'all' runs every variant, with the 32-token-chunk CARVE ones)")
    ap.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="start no new measurement after SECONDS (the table then shows what was measured); "
                         "fla autotunes its kernels at first use, for minutes unless Triton's autotuning "
                         "cache is carried in (scripts/gpu-check)")
    ap.add_argument("--profile", action="store_true",
                    help="also record the CUDA time of each kernel of one fwd+bwd (CARVE variants), from the torch profiler")
    ap.add_argument("--long", action="store_true",
                    help="the long-context table instead: B = 1, H in {8, 16}, T in {4K, 32K, 64K, 128K}, prefill "
                         "and fwd+bwd, ns per token (default --only: " + " ".join(LONG_TABLE) + ")")
    ap.add_argument("--shapes", type=parse_shapes, default=None, metavar="BxHxT,...",
                    help="the long-context table at these shapes (implies --long)")
    ap.add_argument("--carve-settings", nargs="*", default=None, metavar="FIELD=VALUE",
                    help="run the CARVE variants with these CarveSettings fields changed from what choose_settings "
                         "picks (e.g. value_split=4); the rows record the settings they ran")
    args = ap.parse_args()
    if args.long or args.shapes:
        args.shapes = args.shapes or LONG_SHAPES
        if "--only" not in sys.argv:
            args.only = None
    import triton

    fla = _fla()
    H, K, V = 16, 128, 128
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        driver = "?"
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), device=torch.cuda.get_device_name(),
                driver=driver, torch=torch.__version__, triton=triton.__version__,
                fla=fla["version"] if fla else None, python=platform.python_version(),
                shape=dict(tokens=args.tokens, H=H, K=K, V=V, dtype="bf16"), results={})
    import time

    t_start = time.perf_counter()
    time_left = lambda: args.time_limit is None or time.perf_counter() - t_start <= args.time_limit
    if args.shapes:
        info["shape"] = dict(K=K, V=V, dtype="bf16", attention="16 query / 4 kv heads x 64")
        run_long(args, fla, info, time_left)
        return
    override = parse_settings(args.carve_settings)
    for T in args.T:
        if args.time_limit is not None and time.perf_counter() - t_start > args.time_limit:
            print(f"time limit: T={T} not started", flush=True)
            continue
        B = args.tokens // T
        x = make(B, T, H, K, V)
        res = {}
        for name, (fn, names) in variants(x, fla, override).items():
            if args.only and "all" not in args.only and name not in args.only:
                continue
            if args.time_limit is not None and time.perf_counter() - t_start > args.time_limit:
                res[name] = dict(error="not measured: --time-limit reached")
                print(T, name, res[name], flush=True)
                continue
            try:
                res[name] = bench_one(fn, names, x)
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                res[name] = dict(error=repr(exc)[:300])
            if name in CARVE_VARIANTS:
                res[name]["settings"] = carve_settings(x, name, override).as_dict()
            if args.profile and name.startswith("carve") and "error" not in res[name]:
                res[name]["kernels_ms"] = kernel_times(fn, names, x)
            print(T, name, res[name], flush=True)
        info["results"][str(T)] = res
        del x
        torch.cuda.empty_cache()
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)
    print(f"\nCARVE kernels | {info['device']} | torch {info['torch']} | triton {info['triton']} | fla {info['fla']} | {driver}")
    print("median ms (ratio to fla chunk_gdn2), peak MiB above inputs")
    for T, res in info["results"].items():
        print(f"T={T} (B={args.tokens // int(T)})")
        print("\n".join(table_lines(res)))


if __name__ == "__main__":
    main()
