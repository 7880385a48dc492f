#!/usr/bin/env bash
# The engine benchmark on one CUDA card (H100/H200), sized to finish in about 8 minutes:
# all four paths at 4,096² and the engine and forward at 8,192² with the full-width model
# (bf16 autocast: precision auto), the model's achieved TFLOP/s against the card's bf16 dense
# peak, then the bf16-vs-fp32 check (polygon counts within 3%, footprint IoU >= 0.98).
#   bench/gpu.sh            # on the GPU machine
#   bench/gpu.sh --dry-run  # the same Python on the CPU at a tiny size (checks the script runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export QT_QPA_PLATFORM=offscreen
WORK=${WORK:-$(mktemp -d /tmp/sn6-gpu-bench.XXXXXX)}

if [ "${1:-}" = "--dry-run" ]; then
  DEVICE=cpu SIZES="512:full" REPEATS=1 CHECK_SIZE=512
else
  DEVICE=cuda SIZES="4096:full,8192:full:forward+engine" REPEATS=2 CHECK_SIZE=2048
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
fi

timeout 420 "$PY" bench/bench_engine.py --device "$DEVICE" --precision auto --sizes "$SIZES" \
  --repeats "$REPEATS" --flops --markdown --workdir "$WORK"
timeout 120 "$PY" bench/bench_engine.py --compare-precision --device "$DEVICE" --size "$CHECK_SIZE" --workdir "$WORK"
