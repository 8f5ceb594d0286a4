#!/usr/bin/env bash
# Run 32h (NOTES.md, session 10): Nsight Compute on one launch of the computation pass at 16K (Llama-3.1-8B
# shapes), SALE's mask at tau 0 (every block) and 0.03 (density ~0.31): the Gluon union ring with 128-key
# steps (gluon_skip, the Hopper default), with 64-key steps (gluon_skip2) and the Triton split form
# (default): duration, tensor-pipe activity, issue activity and the stall reasons per issued instruction.
#   OUT=dir [TILES="gluon_skip gluon_skip2 default"] [TAUS="0 0.03"] bash notes/dev_runs/run32h_ncu_attend.sh
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
for TAU in ${TAUS:-0 0.03}; do
  for TILE in ${TILES:-gluon_skip gluon_skip2 default}; do
    f="$OUT/ncu_attend_${TILE}_tau${TAU}.txt"
    timeout 150 ncu --clock-control none --target-processes all -k "regex:_attend_(gluon_union|steps)_kernel" -s 1 -c 1 \
      --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats \
      --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_active,sm__pipe_fma_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_xu_cycles_active.avg.pct_of_peak_sustained_active,sm__pipe_alu_cycles_active.avg.pct_of_peak_sustained_active" \
      python3 -c "
import torch, sale
from sale.workloads import make_qkv
from sale.triton.attend_kernel import attend_triton
q, k, v = make_qkv('structured', 1, 32, 8, 16384, 128, torch.bfloat16, 'cuda', seed=16384)
cfg = sale.SaleConfig(backend='triton', check_finite=False)
mask = sale.select_blocks(q, k, $TAU, cfg)
print('density', float(mask.float().mean()))
for _ in range(2):
    attend_triton(q, k, v, mask, cfg, tile='$TILE')
torch.cuda.synchronize()" > "$f" 2>&1
    echo "== $TILE tau $TAU"
    grep -E "^density|Duration|Issue Slots Busy|Issued Warp|No Eligible|Eligible Warps Per|Warp Cycles Per Issued|stalled_.*ratio|gmma|pipe_(fma|xu|alu)_cycles|Registers Per|Achieved Occupancy|Block Limit Shared" "$f" \
      | awk '/stalled/ { if ($NF+0 > 0.1) print; next } { print }' | head -40
  done
done
