#!/usr/bin/env bash
# Run 28 (repo root, on the H100): the computation pass with int8 q . k (SaleConfig.int8_qk, the authors'
# INT8-QK variant) against the exact 16-bit form, on SALE's own masks of the structured workload; its GPU
# tests; SALE end to end with both forms at fixed thresholds. Run 28a/b named some tiles differently
# (NOTES.md, run 28: split_lp is now "default", split_i2f / split_s2_i2f the int8 default's conversion).
#   OUT=dir [LENGTHS="16384 65536"] [DENSITIES="1 0.5 0.25 0.1"] [TILES="..."] [THRESHOLDS="0.01 0.03"] bash profiler/gpu_run_int8.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 240 python3 -m pytest -q tests/test_triton_kernels.py -m cuda -k "attend or int8" 2>&1 | tail -15 | tee "$OUT/gpu_tests_int8.txt"
fi
timeout ${BENCH_TIMEOUT:-420} python3 -m profiler bench-attend --lengths ${LENGTHS:-16384 65536} \
  --densities ${DENSITIES:-1 0.5 0.25 0.1} --mask-source structured --thresholds ${THRESHOLDS:-0.01 0.03} --qk exact int8 \
  --tiles ${TILES:-default split_single gathered split_s2_lp:int8 split_s2_lp_magic:int8 default:int8} \
  --out "$OUT/bench_attend_int8.jsonl" 2>&1 | tee "$OUT/bench_attend_int8.txt"
