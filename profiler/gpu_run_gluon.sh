#!/usr/bin/env bash
# GPU call (repo root, on the H100), session 3: the Gluon estimate (sale/triton/estimate_gluon.py).
# Its GPU tests (masks against the reference, every option), then bench-select timing the Triton
# default beside the Gluon tiles with the mask of every tile compared to the default's.
#   OUT=dir bash profiler/gpu_run_gluon.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 240 python3 -m pytest -q tests -m cuda -k "select" ${PYTEST_ARGS:-} 2>&1 | tail -15 | tee "$OUT/gpu_tests_select.txt"
timeout 300 python3 -m profiler bench-select --lengths ${LENGTHS:-16384 32768 65536 131072} --check-heads 2 \
  --estimate-rows --tiles default ${TILES:-gluon gluon_n64 gluon_n64_fp8 gluon_n64_r80} \
  --out "$OUT/bench_select_gluon.jsonl" 2>&1 | grep -v "^  timing" | tee "$OUT/bench_select_gluon.txt"
