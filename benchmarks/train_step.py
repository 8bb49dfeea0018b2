"""Training-step time of one sweep variant's model on its own training batches (one GPU).

Builds the model of one variant of a sweep file (or a plain recipe), draws packed batches from the
recipe's training data, and times forward and backward + optimizer step per step under bf16 autocast
(CUDA-synchronised wall clock; the first step, which compiles kernels, is reported apart). With
``--profile`` it prints torch.profiler's table of the heaviest CUDA kernels over three steps, which
shows which CARVE kernels ran (``carve_chunk_*``, or ``carve_wide_*`` for heads above 128 and fp32 operands).

    PYTHONPATH=. python3 benchmarks/train_step.py recipes/sweep-ruler-h200.yaml --pattern CCCCCCCC
    PYTHONPATH=. python3 benchmarks/train_step.py recipes/sweep-ruler-h200.yaml --pattern AAAAAAAA --batch 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _variant(path: str, pattern: str | None):
    from hybrid.sweep.runner import plan

    runs = plan(path, Path(tempfile.mkdtemp()), 1, False)
    if pattern is None:
        return runs[0].recipe
    for vr in runs:
        if vr.recipe.letters == pattern:
            return vr.recipe
    sys.exit(f"no variant with pattern {pattern} in {path}; patterns: {', '.join(v.recipe.letters for v in runs)}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", help="sweep YAML (or a plain recipe)")
    ap.add_argument("--pattern", help="which variant (its layer pattern); default the first")
    ap.add_argument("--batch", type=int, help="rows per step (default: the recipe's train.batch_size)")
    ap.add_argument("--steps", type=int, default=12, help="timed steps after the first (default 12)")
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernel table of three steps")
    ap.add_argument("--compile", choices=["recipe", "on", "off"], default="recipe",
                    help="torch.compile the model (default: the recipe's train.compile)")
    args = ap.parse_args(argv)

    from hybrid.train.config import TrainConfig
    from hybrid.train.loop import _build_model, _forward, make_source
    from hybrid.train.tokenizer import load_tokenizer

    rec = _variant(args.sweep, args.pattern)
    cfg = TrainConfig.from_dict(dict(rec.train))
    if args.batch:
        cfg.batch_size = args.batch
    tok = load_tokenizer(cfg.data.tokenizer) if cfg.data.kind != "assoc_recall" else None
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _build_model(rec, cfg, tok).to(dev)
    compiled = cfg.compile if args.compile == "recipe" else args.compile == "on"
    fwd_model = torch.compile(model) if compiled else model
    source = make_source(cfg, vocab_size=model.config.vocab_size, tokenizer=tok, rank=0, world_size=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [source.batch(i, 0) for i in range(4)]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(b):
        b = b.to(dev)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss, _ = _forward(fwd_model, b, at_targets=True)  # as the training loop steps
        sync()
        t1 = time.perf_counter()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1), b.num_tokens

    f0, b0, _ = step(batches[0])
    if compiled:  # packed layouts differ in their number of documents: the second shape recompiles
        f1, b1, _ = step(batches[1])
        f0, b0 = f0 + f1, b0 + b1
    times = [step(batches[(i + 1) % 4]) for i in range(args.steps)]
    fwd, bwd = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    ntok = times[0][2]
    print(f"{rec.name} ({rec.letters}), {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{cfg.batch_size} x {cfg.seq_len} tokens per step on {dev}{', torch.compile' if compiled else ''}")
    print(f"first step{'s' if compiled else ''} (compiles): fwd {f0:.0f} ms, bwd+opt {b0:.0f} ms")
    print(f"median of {args.steps}: fwd {fwd:.1f} ms, bwd+opt {bwd:.1f} ms, "
          f"{ntok / ((fwd + bwd) / 1e3):,.0f} tokens/s")
    if args.profile and dev.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(3):
                step(batches[i])
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20))


if __name__ == "__main__":
    main()
