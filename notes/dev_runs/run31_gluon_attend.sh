#!/usr/bin/env bash
# Run 31a (device call): the Gluon computation pass (tile "gluon") - its GPU tests, then bench-attend on
# SALE's masks at 16K and 64K against the Triton default in the same run.
#   OUT=dir bash notes/dev_runs/run31_gluon_attend.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
timeout 150 python3 -m pytest -q -x tests -m cuda -k "gluon" > "$OUT/gpu_tests_gluon.txt" 2>&1
rc=$?; tail -25 "$OUT/gpu_tests_gluon.txt"
[ $rc -ne 0 ] && { echo "GPU tests failed or timed out (rc $rc): no benchmark"; exit $rc; }
timeout ${BENCH_TIMEOUT:-240} python3 -m profiler bench-attend --lengths ${LENGTHS:-16384 65536} \
  --mask-source structured --tiles ${TILES:-default gluon} --thresholds \
  --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
