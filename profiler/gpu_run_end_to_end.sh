#!/usr/bin/env bash
# GPU call (repo root, on the H100), session 7: SALE end to end with the current kernels: the full sweep
# (SALE vs every dense baseline, 4K..128K x tau 0.001..0.03, what the dashboard draws by default), then
# bench-attend at fixed thresholds on SALE's masks, exact and int8 q . k, no density points.
#   OUT=dir bash profiler/gpu_run_end_to_end.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 270 python3 -m profiler sweep --lengths 4096 8192 16384 32768 65536 131072 \
  --thresholds 0.001 0.003 0.01 0.03 --q-heads 32 --kv-heads 8 --head-dim 128 --reps 3 \
  --accuracy-max-len 16384 --no-progress --out "$OUT/sweep_h100.jsonl" 2>&1 | tee "$OUT/sweep_h100.txt"
timeout 300 python3 -m profiler bench-attend --lengths 16384 32768 65536 131072 --densities \
  --thresholds 0.003 0.01 0.03 0.1 --tiles default --qk exact int8 --mask-source structured \
  --out "$OUT/bench_attend_end_to_end.jsonl" 2>&1 | tee "$OUT/bench_attend_end_to_end.txt"
