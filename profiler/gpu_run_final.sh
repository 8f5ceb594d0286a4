#!/usr/bin/env bash
# GPU call (repo root, on the H100), a session's last: every GPU test, then the computation-pass
# benchmark on SALE's own masks of the structured workload: the exact default (session 6: the split form
# with lone blocks paired), the session-5 default (split_single) and the gathered form, and the int8-QK
# option's tiles; SALE end to end at fixed thresholds with exact and int8 q . k.
#   OUT=dir [LENGTHS="16384 32768 65536 131072"] [SKIP_TESTS=1] bash profiler/gpu_run_final.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
[ -z "${SKIP_TESTS:-}" ] && timeout 240 python3 -m pytest -q tests -m cuda 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
timeout ${BENCH_TIMEOUT:-420} python3 -m profiler bench-attend --lengths ${LENGTHS:-16384 32768 65536 131072} \
  --mask-source structured --qk exact int8 \
  --tiles default split_single gathered split_s2_lp:int8 split_s2_lp_magic:int8 default:int8 \
  --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
