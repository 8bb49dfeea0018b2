#!/usr/bin/env bash
# Training throughput, 1 GPU vs 2 GPUs (DDP through torchrun), same recipe and the same GLOBAL batch
# (BATCH sequences per step: BATCH on one GPU, BATCH/2 on each of two), so the two loss curves should
# agree to rounding and the tokens/s ratio is the scaling figure.
#
# Runs from the repository root without installing the package (PYTHONPATH=. python3 -m hybrid ...).
# Usage:
#   bash benchmarks/train_scaling.sh [RECIPE] [STEPS] [OUT_ROOT] [extra recipe overrides ...]
# Defaults: recipes/carve-3to1.yaml, 200 steps, runs/train_scaling.
# BATCH (env, default 16) is the global batch. With perfect scaling the 2-GPU tokens/s is 2x the
# 1-GPU run. The script prints both loss curves (every 20th logged step), their largest difference,
# tokens/s, MFU and the scaling efficiency, and leaves the runs' metrics.jsonl and loss_curve.png
# under OUT_ROOT/{1gpu,2gpu}.
set -euo pipefail

RECIPE=${1:-recipes/carve-3to1.yaml}
STEPS=${2:-200}
OUT=${3:-runs/train_scaling}
shift $(( $# < 3 ? $# : 3 ))
EXTRA=("$@")
PY=${PYTHON:-python3}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

# DEVICE=cpu runs the same two configurations on CPU processes (gloo), to check the script itself.
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-16}
if [ "$DEVICE" = cpu ]; then
  NGPU=2
else
  NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
  if [ "$NGPU" -lt 1 ]; then
    echo "no CUDA GPU visible; this benchmark needs 1-2 GPUs (DEVICE=cpu to dry-run it on CPU)" >&2
    exit 1
  fi
fi
rm -rf "$OUT/1gpu" "$OUT/2gpu"
mkdir -p "$OUT"

echo "== 1 GPU: $RECIPE, $STEPS steps =="
CUDA_VISIBLE_DEVICES=0 $PY -m hybrid train "$RECIPE" --out "$OUT/1gpu" --steps "$STEPS" --no-progress \
  --device "$DEVICE" train.save_every=0 train.batch_size="$BATCH" "${EXTRA[@]}" | tee "$OUT/1gpu.log"

if [ "$NGPU" -ge 2 ]; then
  echo "== 2 GPUs (torchrun, DDP): $RECIPE, $STEPS steps =="
  CUDA_VISIBLE_DEVICES=0,1 $PY -m torch.distributed.run --standalone --nproc-per-node 2 \
    -m hybrid train "$RECIPE" --out "$OUT/2gpu" --steps "$STEPS" --no-progress \
    --device "$DEVICE" train.save_every=0 train.batch_size="$((BATCH / 2))" "${EXTRA[@]}" | tee "$OUT/2gpu.log"
else
  echo "only one GPU visible: skipping the 2-GPU run" >&2
fi

$PY - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
runs = {}
for name in ("1gpu", "2gpu"):
    path = root / name / "metrics.jsonl"
    if not path.exists():
        continue
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    train = [r for r in recs if r["kind"] == "train"]
    evals = [r for r in recs if r["kind"] == "eval" and r.get("eval_loss") is not None]
    summary = json.loads((root / name / "summary.json").read_text())
    # steady-state throughput: median of the logged windows after the first 10% of steps (compile, warmup)
    tail = [r["tok_per_s"] for r in train if r["step"] > max(1, len(train) // 10)] or [train[-1]["tok_per_s"]]
    tail.sort()
    runs[name] = {"train": train, "evals": evals, "summary": summary, "tok_s": tail[len(tail) // 2],
                  "mfu": [r["mfu"] for r in train if r.get("mfu") is not None]}

print("\nloss curves (step: train loss)")
for name, r in runs.items():
    pts = r["train"][:: max(1, len(r["train"]) // 20)]
    print(f"  {name}: " + "  ".join(f"{p['step']}:{p['loss']:.3f}" for p in pts))
    if r["evals"]:
        print(f"  {name} held-out: " + "  ".join(f"{e['step']}:{e['eval_loss']:.3f}" for e in r["evals"]))
print("\nthroughput")
for name, r in runs.items():
    s = r["summary"]
    mfu = r["mfu"][len(r["mfu"]) // 2] if r["mfu"] else None
    print(f"  {name}: median {r['tok_s']:,.0f} tokens/s (run average {s['tokens_per_s']:,.0f}), "
          f"MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} ({s['flops_source']}), final loss "
          f"{s['final_loss']:.4f}, wall {s['wall_time_s']:.1f}s")
if "1gpu" in runs and "2gpu" in runs:
    a = {r["step"]: r["loss"] for r in runs["1gpu"]["train"]}
    b = {r["step"]: r["loss"] for r in runs["2gpu"]["train"]}
    common = sorted(set(a) & set(b))
    if common:
        worst = max(common, key=lambda s: abs(a[s] - b[s]))
        print(f"\nloss curves, same global batch: largest |1gpu - 2gpu| = {abs(a[worst] - b[worst]):.2e} "
              f"at step {worst} over {len(common)} logged steps")
    eff = runs["2gpu"]["tok_s"] / (2 * runs["1gpu"]["tok_s"])
    print(f"\nscaling 1 -> 2 GPUs: {runs['2gpu']['tok_s'] / runs['1gpu']['tok_s']:.2f}x tokens/s "
          f"({100 * eff:.0f}% efficiency)")
EOF
