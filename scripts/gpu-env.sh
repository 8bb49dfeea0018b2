# Sourced by scripts/gpu-check and scripts/gpu-suite (run on the device machine from the repo root):
# $OUT (default ./out) made absolute as OUT_ABS; this checkout on PYTHONPATH; fla's wheels from .whl/
# installed to /tmp/site when present; Triton's autotuning results cached on disk and written back as
# $OUT/autotune.tar on exit (fla autotunes its kernels for minutes at every new shape). The choices
# already made travel in: benchmarks/fla-autotune-sm90.tar (tracked: fla 0.6.0's kernels at the
# benchmarks' shapes, Triton 3.6.0, tuned on an H100 and an H200, both sm_90: the layers at 8 x 4096,
# 2 x 16384 and 1 x 32768 but KimiDeltaAttention at 8 x 4096 only; the long-context table at H = 8), then
# .autotune/autotune.tar when present (copy a run's $OUT/autotune.tar there and carry .autotune).
# Only the choices travel, not binaries.
OUT="${OUT:-out}"
mkdir -p "$OUT"
OUT_ABS="$(cd "$OUT" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
export TRITON_CACHE_AUTOTUNING=1 TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$HOME/.triton/cache}"
mkdir -p "$TRITON_CACHE_DIR"
for tune in benchmarks/fla-autotune-sm90.tar .autotune/autotune.tar; do
  if [ -f "$tune" ]; then tar -xf "$tune" -C "$TRITON_CACHE_DIR" && echo "autotune cache $tune: $(tar -tf "$tune" | grep -c json) entries"; fi
done
save_autotune() { (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' | tar -cf "$OUT_ABS/autotune.tar" -T -) || true; }
trap save_autotune EXIT
nvidia-smi --query-gpu=name,driver_version,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
