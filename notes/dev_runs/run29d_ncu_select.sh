#!/usr/bin/env bash
# Run 29d (NOTES.md): Nsight Compute on one launch of the selection kernel at 16K (Llama-3.1-8B shapes),
# the vote default (fp8) against epi1 (sessions 1-6): pipe utilization, issue activity and the stall
# reasons per issued instruction.   OUT=dir [TILES="default epi1"] bash notes/dev_runs/run29d_ncu_select.sh
# Run 30d (session 8) ran the same loop over tiles kf_wb and default at tree cd9d4c9, where kf_wb named the
# keys-first vote (now `default`) and default the rows-first vote (now `rows`): TILES="default rows" today.
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
for TILE in ${TILES:-default epi1}; do
  ncu --clock-control none --target-processes all -k regex:_select_kernel -s 1 -c 1 \
    --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats \
    --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active" \
    python3 -c "
import torch, sale
from sale.workloads import make_qkv
from sale.triton.select_kernel import select_triton
q, k, v = make_qkv('structured', 1, 32, 8, 16384, 128, torch.bfloat16, 'cuda', seed=16384)
cfg = sale.SaleConfig(backend='triton', check_finite=False)
quant = sale.quantize(q, k, cfg)
tau = torch.full((32,), 0.01, device='cuda')
for _ in range(2):
    select_triton(q, k, tau, cfg, quant, tile='$TILE')
torch.cuda.synchronize()" > "$OUT/ncu_select_$TILE.txt" 2>&1
  grep -E "Duration|Issue Slots|Issued Warp|No Eligible|Eligible Warps|Warp Cycles Per Issued|stalled_.*ratio|pipe_.*pct|Registers|Achieved Occupancy" "$OUT/ncu_select_$TILE.txt" \
    | awk '$NF+0 > 0.05 || /Duration|Issue|Eligible|Cycles|Registers|Occupancy/' | head -60
  echo "----"
done
