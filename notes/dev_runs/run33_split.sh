#!/usr/bin/env bash
# Run 33 (device call): the split union ring (tile gluon_split, "only" steps halved between the consumers):
# its GPU tests and the default's (a hang in one cannot hide the other: each under a timeout), the synthetic
# ring costs read as split rings, then bench-attend on SALE's masks against gluon_skip, gluon_skip2 and the
# Triton split form in the same run.
#   OUT=dir [LENGTHS="16384 65536"] [TILES="gluon_skip gluon_split gluon_skip2 default"] bash notes/dev_runs/run33_split.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
for t in ${TEST_TILES:-gluon_split gluon_skip}; do
  timeout ${TEST_TIMEOUT:-120} python3 -m pytest -q -x tests -m cuda -k "gluon and ($t- or $t])" >> "$OUT/gpu_tests.txt" 2>&1
  echo "tile $t: pytest rc $?"; tail -3 "$OUT/gpu_tests.txt"
done
[ -n "${SKIP_COSTS:-}" ] || SPLIT=1 timeout 200 python3 notes/dev_runs/run33_union_costs.py ${COST_LENGTHS:-16384 65536} 2>&1 | tee "$OUT/union_costs_split.txt"
[ -z "${LENGTHS-16384 65536}" ] && exit 0
timeout ${BENCH_TIMEOUT:-300} python3 -m profiler bench-attend --lengths ${LENGTHS:-16384 65536} \
  --densities ${DENSITIES:-1 .5 .25 .1 .05} --mask-source structured --tiles ${TILES:-gluon_skip gluon_split gluon_skip2 default} \
  --thresholds --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
