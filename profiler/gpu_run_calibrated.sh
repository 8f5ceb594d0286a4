#!/usr/bin/env bash
# SALE end to end at per-head thresholds calibrated on the structured workload (issue 4's 3.36x target),
# exact estimate and estimate_rows=16, Llama-3.1-8B shapes (repo root, on the H100).
#   [THETA=0.4] [QK="exact int8"] OUT=dir bash profiler/gpu_run_calibrated.sh [METHOD (halving)] [LENGTHS (16384 65536 131072)]
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
METHOD=${1:-halving}; LENGTHS=${2:-16384 65536 131072}; QK=${QK:-exact}
timeout 560 python3 -m profiler bench-attend --lengths $LENGTHS --densities --thresholds --tiles default \
  --calibrate-theta "${THETA:-0.4}" --calibrate-method "$METHOD" --estimate-rows all 16 --qk $QK \
  --out "$OUT/bench_attend_calibrated_${METHOD}_theta${THETA:-0.4}.jsonl" 2>&1 | tee "$OUT/bench_attend_calibrated_${METHOD}_theta${THETA:-0.4}.txt"
