#!/usr/bin/env bash
# Run 22 (session 3; tree of commit b02a524): ncu issue statistics of the Triton and Gluon estimate
# loops at 16K, and the Gluon estimate_rows mask check on the same quantized inputs.   OUT=dir bash notes/dev_runs/run22_gluon_probe.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
python3 notes/dev_runs/run22_gluon_probe.py gluon compare 2>&1 | tail -2 | tee "$OUT/run22_compare.txt"
for spec in "default _select_kernel" "gluon _estimate_kernel" "gluon_w4 _estimate_kernel"; do
  set -- $spec
  ncu --clock-control none -k regex:$2 -c 1 --section WarpStateStats --section SchedulerStats \
      --section Occupancy --section ComputeWorkloadAnalysis \
      python3 notes/dev_runs/run22_gluon_probe.py $1 > "$OUT/run22_ncu_$1.txt" 2>&1
  echo "== $1"; grep -iE "stall|spends|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|Achieved Occupancy|Duration|Executed Ipc A" "$OUT/run22_ncu_$1.txt" | cut -c1-300 | head -20
done
