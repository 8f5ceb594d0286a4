#!/usr/bin/env bash
# GPU call (repo root, on the H100), sessions 7-8: every GPU test, then the selection benchmark: default
# (session 8: the vote keys first, fp8 operands), rows (session 7's default: the vote rows first), int8
# (the same on int8 operands), epi1 (the default of sessions 1-6) and the dot-only probe, the masks
# against the reference on 4 heads, and estimate_rows 16 and 8.
#   OUT=dir [LENGTHS="8192 16384 32768 65536 131072"] [SKIP_TESTS=1] bash profiler/gpu_run_select_final.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
[ -z "${SKIP_TESTS:-}" ] && timeout 240 python3 -m pytest -q tests -m cuda 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout ${BENCH_TIMEOUT:-330} python3 -m profiler bench-select --lengths ${LENGTHS:-8192 16384 32768 65536 131072} \
  --tiles default rows int8 epi1 probe_dot_only --estimate-rows 16 8 \
  --out "$OUT/bench_select.jsonl" 2>&1 | grep -v "^  timing" | tee "$OUT/bench_select.txt"
