"""Layer benchmark on one GPU: one token-mixing layer's forward + backward, ours against fla's layers.

d_model 1024; recurrent layers 8 heads x 128 (key and value); our attention layer 16 query / 4 kv heads x
64. Layers: our CARVE layer (``RecurrentMixer``) with content on and off, its GDN-2 mode, our attention
layer, and fla's ``GatedDeltaNet`` (expand_v 1), ``GatedDeltaNet2`` and ``KimiDeltaAttention``. Parameters
fp32, input the fp32 residual stream ``[B, T, 1024]``, bf16 autocast (as in training). Times are medians
of triton.testing.do_bench (ms) of a forward and a backward (gradients of the input and of every
parameter); peak is the peak allocated memory of one forward + backward above what the inputs and the
parameters already hold (MiB). Ratios are to fla's layers measured in the same run.

    PYTHONPATH=. python3 benchmarks/layers.py --json out/layers.json
    PYTHONPATH=. python3 benchmarks/layers.py --shapes 8x4096 --profile     # and the CUDA-time split

``--profile`` records one forward + backward of our recurrent layers with the torch profiler and prints
the share of CUDA time in the CARVE operator's kernels (``carve*``) against everything else (our fused
ops, GEMMs, the rest), with the largest kernels outside the operator.

fla (``fla-core`` / ``flash-linear-attention`` 0.6.0) is optional; without it only our layers run. fla
autotunes its kernels at every new shape (minutes on a fresh machine unless Triton's cache is carried
in, as scripts/gpu-check can): ``--shapes`` picks the shapes. fla refuses its gated backward on Hopper
with Triton < 3.7.1; the script bypasses that guard for TIMING ONLY (as benchmarks/kernels.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import torch

# this folder holds kernels.py, which would shadow the `kernels` package that transformers looks for
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

D_MODEL = 1024
HEADS, HEAD_DIM = 8, 128
ATT_HEADS, ATT_KV_HEADS, ATT_HEAD_DIM = 16, 4, 64
SHAPES = ("8x4096", "2x16384", "1x32768")
OURS = ("carve_content", "carve_nocontent", "carve_gdn2_mode", "attention")
FLA = ("fla_gdn", "fla_gdn2", "fla_kda")
# kernel-name families of the profile split; anything else is "other"
FAMILIES = (("carve_operator", ("carve",)), ("fused_ops", ("short_conv", "gates_", "gated_norm")),
            ("gemm", ("gemm", "nvjet", "cutlass", "sm90_xmma", "cublas")))


def _fla():
    try:
        import fla.ops.common.chunk_o as chunk_o
        from fla.layers import GatedDeltaNet, GatedDeltaNet2, KimiDeltaAttention
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        print(f"fla not available: {exc!r}", file=sys.stderr)
        return None
    chunk_o.TRITON_ABOVE_3_7_1 = True  # timing only, see the module docstring
    import fla

    return dict(GatedDeltaNet=GatedDeltaNet, GatedDeltaNet2=GatedDeltaNet2, KimiDeltaAttention=KimiDeltaAttention,
                version=getattr(fla, "__version__", "?"))


def build(name: str, fla):
    """(module, call) for one layer name; call(module, x) returns the layer output [B, T, d]."""
    from hybrid.blocks import AttentionMixer, RecurrentMixer, normalize_block

    def recurrent(kind, **kw):
        block = normalize_block({"kind": kind, "heads": HEADS, "head_dim": HEAD_DIM, **kw})
        return RecurrentMixer(block, D_MODEL), lambda m, x: m(x)

    if name == "carve_content":
        return recurrent("carve", content="self")
    if name == "carve_nocontent":
        return recurrent("carve", content="off")
    if name == "carve_gdn2_mode":
        return recurrent("gdn2")
    if name == "attention":
        block = normalize_block({"kind": "attention", "heads": ATT_HEADS, "kv_heads": ATT_KV_HEADS,
                                 "head_dim": ATT_HEAD_DIM})

        def call(m, x):
            B, T, _ = x.shape
            return m(x, positions=torch.arange(T, device=x.device).expand(B, T))
        return AttentionMixer(block, D_MODEL), call
    if fla is None:
        raise RuntimeError("fla is not installed")
    common = dict(hidden_size=D_MODEL, head_dim=HEAD_DIM, num_heads=HEADS, mode="chunk")
    cls = {"fla_gdn": "GatedDeltaNet", "fla_gdn2": "GatedDeltaNet2", "fla_kda": "KimiDeltaAttention"}[name]
    return fla[cls](expand_v=1, **common), lambda m, x: m(x)[0]


def _clear(m, x):
    x.grad = None
    for p in m.parameters():
        p.grad = None


def bench_layer(name, fla, B, T, *, rep_ms=150, bf16_params=False):
    """Times and peak of one layer. ``bf16_params``: parameters and input in bf16 without autocast (the
    fallback for an fla layer that fails under autocast; the result says so)."""
    import triton.testing as tt

    m, call = build(name, fla)
    dt = torch.bfloat16 if bf16_params else torch.float32
    m = m.to("cuda", dt)
    x = torch.randn(B, T, D_MODEL, device="cuda", dtype=dt, requires_grad=True)
    leaves = [x, *m.parameters()]

    def fwd():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=not bf16_params):
            return call(m, x)

    do = torch.randn(B, T, D_MODEL, device="cuda", dtype=dt)

    def fwdbwd():
        fwd().backward(do)

    fwdbwd()  # compiles / autotunes
    torch.cuda.synchronize()
    with torch.no_grad():
        t_f = tt.do_bench(fwd, warmup=10, rep=rep_ms // 2, return_mode="median")
    t_fb = tt.do_bench(fwdbwd, warmup=10, rep=rep_ms, grad_to_none=leaves, return_mode="median")
    _clear(m, x)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fwdbwd()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    out = dict(fwd_ms=round(t_f, 4), fwdbwd_ms=round(t_fb, 4), peak_mib=round(peak, 1))
    if bf16_params:
        out["mode"] = "bf16 parameters and input, no autocast"
    return out, (m, call, x, do)


def family(kernel: str) -> str:
    low = kernel.lower()
    for fam, keys in FAMILIES:
        if any(k in low for k in keys):
            return fam
    return "other"


def profile_split(m, call, x, do, reps=3):
    """CUDA time of one fwd+bwd (ms) by kernel family, the operator's share, and the largest other kernels."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    def step():
        _clear(m, x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = call(m, x)
        y.backward(do)

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    kernels = {}
    for ev in prof.key_averages():
        if getattr(ev, "device_type", None) != DeviceType.CUDA:
            continue
        us = getattr(ev, "self_device_time_total", None)
        if us is None:
            us = ev.self_cuda_time_total
        if us > 0:
            kernels[ev.key] = kernels.get(ev.key, 0.0) + us / reps / 1000
    total = sum(kernels.values())
    fams = {}
    for k, ms in kernels.items():
        fams[family(k)] = fams.get(family(k), 0.0) + ms
    others = sorted(((k, ms) for k, ms in kernels.items() if family(k) != "carve_operator"), key=lambda kv: -kv[1])
    return dict(cuda_ms=round(total, 4), families_ms={k: round(v, 4) for k, v in sorted(fams.items())},
                outside_operator_share=round(1 - fams.get("carve_operator", 0.0) / total, 4) if total else None,
                launches=sum(1 for _ in kernels), top_outside={k[:90]: round(ms, 4) for k, ms in others[:10]})


def ratios(res):
    for name, r in res.items():
        if "error" in r:
            continue
        for ref in FLA:
            f = res.get(ref, {})
            if "fwdbwd_ms" in f and name != ref:
                r[f"x_{ref}"] = round(r["fwdbwd_ms"] / f["fwdbwd_ms"], 3)
                r[f"peak_x_{ref}"] = round(r["peak_mib"] / f["peak_mib"], 3) if f["peak_mib"] else None


def table(res) -> list[str]:
    head = f"{'layer':<18}{'fwd+bwd ms':>11}{'fwd ms':>9}{'peak MiB':>10}" + "".join(f"{'x ' + r:>12}" for r in FLA)
    lines = [head]
    for name, r in res.items():
        if "error" in r:
            lines.append(f"{name:<18} {r['error'][:100]}")
            continue
        cells = "".join(f"{r.get('x_' + ref, float('nan')):>12.3f}" for ref in FLA)
        lines.append(f"{name:<18}{r['fwdbwd_ms']:>11.3f}{r['fwd_ms']:>9.3f}{r['peak_mib']:>10.0f}{cells}")
        if "profile" in r:
            p = r["profile"]
            fams = ", ".join(f"{k} {v:.2f}" for k, v in p["families_ms"].items())
            lines.append(f"{'':<18}CUDA {p['cuda_ms']:.2f} ms ({fams}); outside the operator "
                         f"{100 * p['outside_operator_share']:.1f}%")
            for k, ms in list(p["top_outside"].items())[:5]:
                lines.append(f"{'':<22}{ms:>7.3f} ms  {k}")
    return lines


def parse_shape(text: str) -> tuple[int, int]:
    try:
        b, t = text.lower().split("x")
        return int(b), int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is BxT, e.g. 8x4096; got {text!r}") from None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--shapes", nargs="*", type=parse_shape, default=[parse_shape(s) for s in SHAPES],
                    metavar="BxT", help="(batch, tokens) shapes, default " + " ".join(SHAPES))
    ap.add_argument("--only", nargs="*", default=list(OURS + FLA), choices=OURS + FLA, metavar="LAYER",
                    help="layers to run: " + " ".join(OURS + FLA))
    ap.add_argument("--profile", action="store_true",
                    help="also split the CUDA time of our recurrent layers: CARVE operator kernels vs the rest")
    ap.add_argument("--rep-ms", type=int, default=150, help="do_bench measuring time per layer (ms)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/layers.py needs a CUDA GPU")
    import triton

    fla = _fla() if any(n in FLA for n in args.only) else None
    info = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), device=torch.cuda.get_device_name(),
                torch=torch.__version__, triton=triton.__version__, fla=fla["version"] if fla else None,
                python=platform.python_version(), d_model=D_MODEL, heads=HEADS, head_dim=HEAD_DIM,
                attention=dict(heads=ATT_HEADS, kv_heads=ATT_KV_HEADS, head_dim=ATT_HEAD_DIM),
                autocast="bf16", results={})
    t0 = time.perf_counter()
    for B, T in args.shapes:
        res = {}
        for name in args.only:
            if name in FLA and fla is None:
                continue
            try:
                try:
                    res[name], held = bench_layer(name, fla, B, T, rep_ms=args.rep_ms)
                except Exception as exc:  # noqa: BLE001 - an fla layer may refuse autocast: bf16 parameters
                    if name not in FLA:
                        raise
                    print(f"{B}x{T} {name} under autocast failed ({exc!r:.200}); bf16 parameters", flush=True)
                    torch.cuda.empty_cache()
                    res[name], held = bench_layer(name, fla, B, T, rep_ms=args.rep_ms, bf16_params=True)
                if args.profile and name in OURS[:3]:
                    res[name]["profile"] = profile_split(*held)
                del held
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                res[name] = dict(error=repr(exc)[:300])
            torch.cuda.empty_cache()
            print(f"{B}x{T} {name} {res[name]} ({time.perf_counter() - t0:.0f} s)", flush=True)
        ratios(res)
        info["results"][f"{B}x{T}"] = res
        if args.json:
            with open(args.json, "w") as f:
                json.dump(info, f, indent=1)
    print(f"\nlayers | {info['device']} | torch {info['torch']} | triton {info['triton']} | fla {info['fla']}")
    print("d_model 1024, 8 x 128 heads (attention 16/4 x 64), bf16 autocast; median fwd+bwd ms, "
          "peak MiB above inputs, ratio of fwd+bwd to fla's layers")
    for shape, res in info["results"].items():
        print(f"B x T = {shape}")
        print("\n".join(table(res)))


if __name__ == "__main__":
    main()
