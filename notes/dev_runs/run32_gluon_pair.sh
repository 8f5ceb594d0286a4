#!/usr/bin/env bash
# Run 32 (device call): the two-consumer Gluon computation pass (tiles gluon_pair*, FlashAttention-3's layout)
# - its GPU tests tile by tile (a hang in one tile cannot hide the others' results), then bench-attend on
# SALE's masks against the Triton default in the same run.
#   OUT=dir TEST_TILES="gluon_pair gluon_pair_pp" TILES="default gluon_pair" bash notes/dev_runs/run32_gluon_pair.sh
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
ok=""
for t in ${TEST_TILES:-gluon_skip gluon_skip2 gluon_union_s3_nopp gluon_pair_s3 gluon_union_s3 gluon}; do
  timeout ${TEST_TIMEOUT:-90} python3 -m pytest -q -x tests -m cuda -k "gluon and ($t- or $t])" >> "$OUT/gpu_tests.txt" 2>&1
  rc=$?; echo "tile $t: pytest rc $rc"; tail -3 "$OUT/gpu_tests.txt"
  [ $rc -eq 0 ] && ok="$ok $t"
done
tiles=""
for t in ${TILES:-default gluon_pair_s3 gluon_union_s3 gluon_union_s3_nopp gluon_skip gluon_skip2}; do
  case "$t" in default|gluon|gluon_ws|split*) tiles="$tiles $t";; *) [[ " $ok " == *" $t "* ]] && tiles="$tiles $t";; esac
done
echo "timing tiles:$tiles"
[ -z "${LENGTHS-16384 65536}" ] && exit 0
timeout ${BENCH_TIMEOUT:-300} python3 -m profiler bench-attend --lengths ${LENGTHS:-16384 65536} \
  --densities ${DENSITIES:-1 .5 .25 .1 .05} --mask-source structured --tiles $tiles --thresholds \
  --out "$OUT/bench_attend.jsonl" 2>&1 | tee "$OUT/bench_attend.txt"
