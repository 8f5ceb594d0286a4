#!/usr/bin/env bash
# Nsight Compute on the kernels of one point (one launch of each SALE kernel), without touching the
# GPU clocks (--clock-control none), then a short summary: duration, SM and memory throughput,
# registers and achieved occupancy per kernel.
#   bash profiler/capture_ncu.sh [N] [tau] [outdir]
set -euo pipefail
N=${1:-16384}; TAU=${2:-0.01}; OUT=${3:-traces/ncu}
mkdir -p "$OUT"
REP="$OUT/sale_N${N}_tau${TAU}"
ncu --clock-control none --force-overwrite --target-processes all \
  -k regex:"_quantize_rows_kernel|_select_kernel|_attend_kernel" -c 4 \
  --section SpeedOfLight --section LaunchStats --section Occupancy -o "$REP" \
  python3 -c "
import torch, sale
from sale.workloads import make_qkv
q, k, v = make_qkv('structured', 1, 32, 8, $N, 128, torch.bfloat16, 'cuda', seed=$N)
sale.sale_attention(q, k, v, $TAU, sale.SaleConfig(backend='triton', check_finite=False))
torch.cuda.synchronize()"
ncu --import "$REP.ncu-rep" --page details --csv \
  --print-units base > "$REP.details.csv"
python3 - "$REP.details.csv" <<'PY' | tee "$REP.summary.txt"
import csv, sys
keep = ("Duration", "Compute (SM) Throughput", "Memory Throughput", "Registers Per Thread", "Achieved Occupancy")
rows = {}
for r in csv.DictReader(open(sys.argv[1])):
    if r.get("Metric Name") in keep:
        rows.setdefault((r["ID"], r["Kernel Name"][:40]), {})[r["Metric Name"]] = f"{r['Metric Value']} {r.get('Metric Unit', '')}".strip()
for (i, name), m in rows.items():
    print(f"{i:>3} {name:<40} " + "  ".join(f"{k}={m.get(k, '-')}" for k in keep))
PY
