# Sourced by scripts/gpu-check and scripts/gpu-suite (run on the device machine from the repo root):
# $OUT (default ./out) made absolute as OUT_ABS; this checkout on PYTHONPATH; fla's wheels from .whl/
# installed to /tmp/site when present; Triton's autotuning results cached on disk and written back as
# $OUT/autotune.tar on exit (fla autotunes its kernels for minutes at every new shape). Copy that file
# to .autotune/autotune.tar and carry .autotune: a later run reuses the choices (only they travel, not
# binaries).
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
if [ -f .autotune/autotune.tar ]; then tar -xf .autotune/autotune.tar -C "$TRITON_CACHE_DIR" && echo "autotune cache: $(tar -tf .autotune/autotune.tar | grep -c json) entries"; fi
save_autotune() { (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' | tar -cf "$OUT_ABS/autotune.tar" -T -) || true; }
trap save_autotune EXIT
nvidia-smi --query-gpu=name,driver_version,memory.used,utilization.gpu --format=csv,noheader 2>/dev/null || true
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
