#!/usr/bin/env bash
# GPU call (repo root, on the H100): SaleConfig(block_q=128), 128-row mask blocks: the computation pass
# on 128-row tiles (two warpgroups) and the selection's cost, against cuDNN in the same run.
#   OUT=dir bash profiler/gpu_run_block_q128.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 250 python3 -m profiler bench-attend --block-q 128 --lengths 16384 65536 131072 --densities 1.0 0.25 0.1 \
  --thresholds 0.01 --tiles default tb2 tb4_w8 --out "$OUT/bench_attend_bq128.jsonl" 2>&1 | tee "$OUT/bench_attend_bq128.txt"
timeout 250 python3 -m profiler bench-select --block-q 128 --lengths 16384 65536 131072 --tiles default \
  --estimate-rows 32 16 --option-check-max-len 16384 --out "$OUT/bench_select_bq128.jsonl" 2>&1 \
  | grep -v "^  timing" | tee "$OUT/bench_select_bq128.txt"
