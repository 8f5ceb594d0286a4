#!/usr/bin/env bash
# One device call: GPU tests, then both benchmarks. Usage (repo root, on the GPU machine):
#   OUT=/some/dir bash profiler/gpu_check.sh [quick]
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
timeout 240 python3 -m pytest -q -x tests/test_triton_kernels.py -k "gpu" 2>&1 | tail -25 | tee "$OUT/gpu_tests.txt"
if [ "${1:-}" = quick ]; then
  timeout 200 python3 -m profiler.bench_select --lengths 8192 32768 --out "$OUT/bench_select.jsonl" 2>&1 | tee "$OUT/bench_select.txt"
  timeout 200 python3 -m profiler.bench_attend --lengths 16384 --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
fi
