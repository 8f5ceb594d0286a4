#!/usr/bin/env bash
# Run 33i (NOTES.md, session 11): why the persistent grid (gluon_split_p) is slower than one program per pair
# (gluon_split): Nsight Compute on one launch of each at 64K, SALE's mask at tau 0.03 (density ~0.17): duration,
# L2 hit rate and DRAM bytes read (the suspect: a persistent grid's programs drift apart, so the pairs in
# flight spread over more heads than the L2 holds).
#   OUT=dir [TILES="gluon_split gluon_split_p"] bash notes/dev_runs/run33i_ncu_l2.sh
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/sale_out}; mkdir -p "$OUT"
for TILE in ${TILES:-gluon_split gluon_split_p}; do
  f="$OUT/ncu_l2_${TILE}.txt"
  timeout 150 ncu --clock-control none --target-processes all -k "regex:_attend_gluon_split_kernel" -s 1 -c 1 \
    --metrics gpu__time_duration.sum,lts__t_sector_hit_rate.pct,dram__bytes_read.sum,lts__t_sectors_srcunit_tex_op_read.sum \
    python3 -c "
import torch, sale
from sale.workloads import make_qkv
from sale.triton.attend_kernel import attend_triton
q, k, v = make_qkv('structured', 1, 32, 8, 65536, 128, torch.bfloat16, 'cuda', seed=65536)
cfg = sale.SaleConfig(backend='triton', check_finite=False)
mask = sale.select_blocks(q, k, 0.03, cfg)
print('density', float(sale.density(mask, 65536, cfg).mean()))
for _ in range(2):
    attend_triton(q, k, v, mask, cfg, tile='$TILE')
torch.cuda.synchronize()" > "$f" 2>&1
  echo "== $TILE"; grep -E "^density|gpu__time|hit_rate|dram__bytes|lts__t_sectors" "$f"
done
