#!/usr/bin/env bash
# GPU call (repo root, on the H100): the Llama-3.1-8B sweep for the given estimate options ('all' is
# SALE's exact estimate; r is SaleConfig(estimate_rows=r)), one trace file per call.
#   OUT=dir [BLOCK_Q=128] bash profiler/gpu_run_sweep_options.sh NAME OPTION [OPTION...]
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
NAME=$1; shift
timeout 540 python3 -m profiler sweep --lengths 16384 32768 65536 131072 --thresholds 0.001 0.003 0.01 0.03 \
  --q-heads 32 --kv-heads 8 --head-dim 128 --reps 3 --accuracy-max-len 16384 --block-q ${BLOCK_Q:-64} --estimate-rows "$@" \
  --no-progress --out "$OUT/$NAME.jsonl" 2>&1 | tee "$OUT/$NAME.txt"
