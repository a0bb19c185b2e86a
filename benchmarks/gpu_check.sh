#!/usr/bin/env bash
# One short GPU check, run through the device tool from the repository root:
#   carry: .whl (segment-anything wheel) and .gpu (lite_medsam.pth + a reference subset);
#   bash benchmarks/gpu_check.sh            on the GPU machine (writes $OUT/gpu_check.md, .json)
#   bash benchmarks/gpu_check.sh --cpu-smoke here, tiny, to check the script before a GPU is spent
# Prepare .whl and .gpu with benchmarks/gpu_prepare.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if ! "$PY" -c "import segment_anything" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
COMMON=(--reference .gpu/reference --checkpoint .gpu/lite_medsam.pth --no-labels --modes official
        --scratch /tmp --json "$OUT/gpu_check.json")
if [ "${1:-}" = "--cpu-smoke" ]; then
    "$PY" benchmarks/benchmark.py "${COMMON[@]}" --device cpu --configs fp32 --structures brain --reps 1 \
        --sweep --models litemedsam,medsam-vit-b --sweep-batches 1,2 --sweep-precisions bfloat16 \
        --vitb-slices 2 --vitb-batch 2 2>&1 | tee "$OUT/gpu_check.md"
    exit
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
"$PY" benchmarks/benchmark.py "${COMMON[@]}" --device cuda --configs fp32,fp16,bf16 --reps 5 \
    --sweep --models litemedsam,medsam-vit-b --sweep-batches 1,2,4,8,16,32 --sweep-precisions float16,bfloat16 \
    --vitb-slices 100 --vitb-batch 16 "$@" 2>&1 | tee "$OUT/gpu_check.md"
