#!/usr/bin/env bash
# GPU call (repo root, on the H100): the selection GPU tests, then bench-select with the exact estimate
# and the reduced-work estimate_rows options (time, mask recall, attention recall, output error).
#   OUT=dir bash profiler/gpu_run_estimate_rows.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 200 python3 -m pytest -q tests/test_triton_kernels.py -m cuda 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout 330 python3 -m profiler bench-select --tiles default --estimate-rows 32 16 8 4 \
  --out "$OUT/bench_select_estimate_rows.jsonl" 2>&1 | grep -v "^  timing" | tee "$OUT/bench_select_estimate_rows.txt"
