#!/usr/bin/env bash
# One sweep point under Nsight Systems, capturing only the NVTX range of the measured point, then
# `nsys stats` and a SQLite export turned into the per-stage breakdown by profiler/nsys_parse.py.
#   bash profiler/capture_nsys.sh [N] [tau] [outdir]
# (nsys is not installed on the project's H100; this runs where it is.)
set -euo pipefail
N=${1:-32768}; TAU=${2:-0.01}; OUT=${3:-traces/nsys}
command -v nsys >/dev/null || { echo "nsys not found: install Nsight Systems" >&2; exit 2; }
mkdir -p "$OUT"
REP="$OUT/sale_N${N}_tau${TAU}"
# The sweep wraps each repetition in a range "point N=<N> tau=<tau>" of the "sale" domain.
nsys profile --force-overwrite true --trace=cuda,nvtx --capture-range=nvtx \
  --nvtx-capture="point N=${N} tau=${TAU}@sale" --capture-range-end=repeat-shutdown:3 -o "$REP" \
  python3 -m profiler sweep --lengths "$N" --thresholds "$TAU" --q-heads 32 --kv-heads 8 --head-dim 128 \
    --reps 3 --accuracy-max-len 0 --no-progress --out "$OUT/sweep_N${N}.jsonl"
nsys stats --report cuda_gpu_kern_sum,nvtx_sum "$REP.nsys-rep" | tee "$REP.stats.txt"
nsys export --type sqlite --force-overwrite true -o "$REP.sqlite" "$REP.nsys-rep"
python3 -m profiler nsys-breakdown "$REP.sqlite" | tee "$REP.breakdown.txt"
