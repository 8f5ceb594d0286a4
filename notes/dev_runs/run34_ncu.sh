#!/usr/bin/env bash
# Run 34b (NOTES.md, session 12): Nsight Compute's speed-of-light and memory sections for gluon_split_p at 64K on
# SALE's masks at density ~0.25 and ~0.1 (the benchmark's thresholds) and for cuDNN's dense causal kernel: is the
# split kernel's low-density time L2 bandwidth (L2 throughput near its peak) or latency?
#   OUT=dir bash notes/dev_runs/run34_ncu.sh
set -uo pipefail
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
METRICS=gpu__time_duration.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_bytes.sum.per_second,dram__bytes_read.sum
run() {   # name kernel-regex python-body
  timeout 200 ncu --clock-control none --target-processes all -k "regex:$2" -s 1 -c 1 --section SpeedOfLight \
    --section MemoryWorkloadAnalysis --metrics $METRICS python3 -c "
import torch, sale
from sale.workloads import make_qkv
from sale.triton.attend_kernel import attend_triton
q, k, v = make_qkv('structured', 1, 32, 8, 65536, 128, torch.bfloat16, 'cuda', seed=65536)
cfg = sale.SaleConfig(backend='triton', check_finite=False)
$3
torch.cuda.synchronize()" > "$OUT/ncu_$1.txt" 2>&1
  echo "== $1 (rc $?)"; grep -E "^density|Duration|Throughput|Hit Rate|lts__|dram__bytes|Busy|Bandwidth" "$OUT/ncu_$1.txt"
}
for tau in 0.01728991940045639 0.055542945389795574; do
  run "split_p_tau$tau" "_attend_gluon_split_kernel" "
mask = sale.select_blocks(q, k, $tau, cfg)
print('density', float(sale.density(mask, 65536, cfg).mean()))
for _ in range(2):
    attend_triton(q, k, v, mask, cfg)"
done
run cudnn "sdpa|fprop|flash" "
for _ in range(2):
    sale.sdpa_attention(q, k, v, 'cudnn')"
timeout 60 ncu --query-metrics > "$OUT/ncu_query_metrics.txt" 2>&1
grep -iE "gmma|pipe_tensor" "$OUT/ncu_query_metrics.txt" | head -20
