#!/usr/bin/env bash
# GPU call (repo root, on the H100): the occupancy variants of both kernels (NOTES.md, session 2):
# selection tiles with smaller statistics tiles / register caps, attend tiles gathering one block per step
# (run 19 ran them as "default tb1 tb1_s4 tb1_r128", the names before tb1_s4 became the default).
#   OUT=dir bash profiler/gpu_run_occupancy.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 280 python3 -m profiler bench-select --lengths 16384 32768 65536 131072 --check-heads 0 --estimate-rows \
  --tiles default qb1 qb1_s32 qb1_s32_st2_r128 qb1_n64_s32 qb2_s32 \
  --out "$OUT/bench_select_occupancy.jsonl" 2>&1 | grep -v "^  timing" | tee "$OUT/bench_select_occupancy.txt"
timeout 280 python3 -m profiler bench-attend --lengths 16384 65536 --densities 1.0 0.25 0.1 --thresholds 0.01 \
  --tiles tb2 default tb1_s3 tb1_r128 --out "$OUT/bench_attend_occupancy.jsonl" 2>&1 | tee "$OUT/bench_attend_occupancy.txt"
