#!/usr/bin/env bash
# GPU call (repo root, on the H100), a session's last: every GPU test, then the computation-pass
# benchmark with the default tile (session 4: tb=1, 4 stages, softmax scale folded into exp2) beside
# the previous default ("unfolded") and tb2, and SALE end to end at fixed thresholds.
#   OUT=dir bash profiler/gpu_run_final.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 200 python3 -m pytest -q tests -m cuda 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout 380 python3 -m profiler bench-attend --tiles default unfolded tb2 \
  --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
