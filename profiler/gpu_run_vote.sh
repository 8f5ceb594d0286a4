#!/usr/bin/env bash
# GPU call (repo root, on the H100), session 7: selection tiles on the same inputs, every tile's mask
# compared with the default's. Runs 29a/b (NOTES.md) timed the vote variants of commits 80a50de and
# 8d98f74 (tiles vote0 vote2 vote3 vote4 vote3_n64 ... vote3_fp8 vote3_tma, since removed) this way, and
# session 8's runs 30a/c/e the 8-warp and keys-first tiles (TILES="default kf kf_wb ...", NOTES.md).
#   OUT=dir [LENGTHS="16384 32768 65536 131072"] [TILES="..."] bash profiler/gpu_run_vote.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout ${BENCH_TIMEOUT:-360} python3 -m profiler bench-select --lengths ${LENGTHS:-16384 32768 65536 131072} \
  --check-heads 0 --estimate-rows \
  --tiles ${TILES:-default int8 epi1 n64_s32_r168 s4} \
  --out "$OUT/bench_select_vote.jsonl" 2>&1 | grep -v "^  timing" | tee "$OUT/bench_select_vote.txt"
