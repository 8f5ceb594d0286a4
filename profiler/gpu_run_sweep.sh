#!/usr/bin/env bash
# GPU call B (repo root, on the H100): the full sweep on Llama-3.1-8B shapes, a torch.profiler capture
# and an ncu capture of one point.   OUT=dir bash profiler/gpu_run_sweep.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 100 python3 -m pytest -q tests -m cuda 2>&1 | tail -6 | tee "$OUT/gpu_tests.txt"
timeout 250 python3 -m profiler sweep --lengths 4096 8192 16384 32768 65536 131072 \
  --thresholds 0.001 0.003 0.01 0.03 --q-heads 32 --kv-heads 8 --head-dim 128 --reps 3 \
  --accuracy-max-len 16384 --no-progress --out "$OUT/sweep_h100.jsonl" 2>&1 | tee "$OUT/sweep_h100.txt"
timeout 80 python3 -m profiler bench-select --lengths 131072 --tiles default --out "$OUT/bench_select_128k_ties.jsonl" 2>&1 | grep -v "timing tile" | tail -2
timeout 60 python3 -m profiler capture-torch --seq-len 32768 --threshold 0.01 --out "$OUT/torch" 2>&1 | tail -5
timeout 100 bash profiler/capture_ncu.sh 16384 0.01 "$OUT/ncu" > /tmp/ncu_log.txt 2>&1; tail -8 /tmp/ncu_log.txt
rm -f "$OUT"/ncu/*.ncu-rep "$OUT"/ncu/*.csv  # at most 8 files come back from the device tool
