#!/usr/bin/env bash
# Run 24 (repo root, on the H100): the computation pass tile switches (run 24: fold, lazy, tma; now default vs unfolded), their
# GPU tests, and the warp-specialization probe.   OUT=dir bash profiler/gpu_run_attend_variants.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 150 python3 -m pytest -q tests/test_triton_kernels.py -m cuda -k attend 2>&1 | tail -15 | tee "$OUT/gpu_tests_attend.txt"
[ -n "${PROBE:-}" ] && timeout 150 python3 notes/dev_runs/run24_ws_probe.py 16384 65536 2>&1 | tee "$OUT/ws_probe.txt"
timeout 240 python3 -m profiler bench-attend --lengths 16384 65536 --densities 1 0.25 0.1 --thresholds \
  --tiles default unfolded tb2 --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
