#!/usr/bin/env bash
# Run 27 (repo root, on the H100): forms of the computation pass over pairs of kept blocks against the
# gathered form, their GPU tests, on random masks and on SALE's own masks of the structured workload.
# 27a/b ran the pure pair form (tiles pairs*, since removed), 27c the split form (now tile "default").
#   OUT=dir [LENGTHS="16384 65536"] [DENSITIES="1 0.25 0.1"] [TILES="default split_s2 gathered"] bash profiler/gpu_run_split.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 200 python3 -m pytest -q tests/test_triton_kernels.py -m cuda -k attend 2>&1 | tail -15 | tee "$OUT/gpu_tests_attend.txt"
timeout 300 python3 -m profiler bench-attend --lengths ${LENGTHS:-16384 65536} --densities ${DENSITIES:-1 0.25 0.1} --thresholds \
  --tiles ${TILES:-default split_s2 gathered} --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
