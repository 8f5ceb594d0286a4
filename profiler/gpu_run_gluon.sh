#!/usr/bin/env bash
# GPU call (repo root, on the H100), session 10: every GPU test (the Gluon union ring is now the Hopper
# default of the exact computation pass), then the computation-pass benchmark on SALE's own masks of the
# structured workload: the default (gluon_skip, 128-key steps), gluon_skip2 (64-key steps) and the Triton
# split form (tile "default", the default before); SALE end to end at fixed thresholds with exact q . k.
# Session 11 (run 33e): the same with TILES="gluon_split gluon_skip gluon_skip2 default" (the new default first).
#   OUT=dir [LENGTHS="16384 32768 65536 131072"] [SKIP_TESTS=1] [TILES=...] bash profiler/gpu_run_gluon.sh
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then   # nvtx and friends, where the GPU machine lacks them
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
[ -z "${SKIP_TESTS:-}" ] && timeout ${TEST_TIMEOUT:-480} python3 -m pytest -q tests -m cuda 2>&1 | tail -15 | tee "$OUT/gpu_tests.txt"
[ -n "${SKIP_BENCH:-}" ] && exit 0
timeout ${BENCH_TIMEOUT:-540} python3 -m profiler bench-attend --lengths ${LENGTHS:-16384 32768 65536 131072} \
  --mask-source structured --qk exact --tiles ${TILES:-gluon_skip gluon_skip2 default} --thresholds 0.003 0.01 0.03 0.1 \
  --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
