#!/usr/bin/env bash
# GPU call (repo root, on the H100), a session's last: every GPU test, then the computation-pass
# benchmark with the default tile (session 5: the split form) beside the previous default ("gathered"),
# on random masks and SALE's own masks, and SALE end to end at fixed thresholds.
#   OUT=dir [LENGTHS="16384 32768 65536 131072"] [SKIP_TESTS=1] bash profiler/gpu_run_final.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
[ -z "${SKIP_TESTS:-}" ] && timeout 200 python3 -m pytest -q tests -m cuda 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout 380 python3 -m profiler bench-attend --lengths ${LENGTHS:-16384 32768 65536 131072} --tiles default gathered \
  --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
