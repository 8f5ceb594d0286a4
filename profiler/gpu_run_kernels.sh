#!/usr/bin/env bash
# GPU call A (repo root, on the H100): GPU tests, then the selection and computation-pass benchmarks.
#   OUT=dir bash profiler/gpu_run_kernels.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 150 python3 -m pytest -q tests -m cuda 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout 230 python3 -m profiler bench-select --tiles default epi0 s4 probe_int_max probe_dot_only \
  --out "$OUT/bench_select.jsonl" 2>&1 | grep -v "^  timing tile" | tee "$OUT/bench_select.txt"
timeout 200 python3 -m profiler bench-attend --tiles default tb2 tb1_s3 \
  --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
