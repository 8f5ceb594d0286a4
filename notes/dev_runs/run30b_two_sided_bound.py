"""Run 30b (session 8, CPU): run 23's integer-max bound made two-sided. Per (row, 32-key block), with
imax = max_j dot_ij: U = sq_i * (skmax or skmin) * imax + qmkmax bounds max_j s_hat_ij from above and
L = sq_i * (skmin or skmax) * imax + qmkmin from below. A warp's 16 rows x 1 key block is decided when
some row has L > t_i (kept) or every row has U <= t_i (not kept); a warp tile (16 rows x 4 key blocks)
or a CTA tile (128 rows x 4 key blocks) whose blocks are all decided could skip the exact epilogue.
    python3 notes/dev_runs/run30b_two_sided_bound.py [N]      (repo root, CPU)"""
import os
import sys

import torch

sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sale  # noqa: E402
from sale.reference import row_thresholds  # noqa: E402
from run23_int_max_bound import estimate_terms  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
cfg, scale, m, l, dot, sq, sk, qmk = estimate_terms(N)
nkb = N // 32
imax = dot.view(1, 8, N, nkb, 32).amax(-1)
skb = sk.view(1, 8, 1, nkb, 32); skmax, skmin = skb.amax(-1), skb.amin(-1)
qb_ = qmk.view(1, 8, 1, nkb, 32); qmkmax, qmkmin = qb_.amax(-1), qb_.amin(-1)
exact = (dot * sq * sk + qmk).view(1, 8, N, nkb, 32).amax(-1)
U = torch.where(imax >= 0, sq * skmax * imax, sq * skmin * imax) + qmkmax
L = torch.where(imax >= 0, sq * skmin * imax, sq * skmax * imax) + qmkmin
assert (U + 1e-3 >= exact).all() and (L <= exact + 1e-3).all()
cand = sale.blocks.candidate_blocks(N, cfg, "cpu")
print("sk ratio max/min per block, median:", float((skmax / skmin).median()))
for tau in (0.003, 0.01, 0.03, 0.1):
    t = row_thresholds(m, l, torch.full((8,), tau), scale)[..., None]
    c = cand[None, None]
    kept = ((exact - t).view(1, 8, N // 64, 64, nkb).amax(3) > 0) & c
    # per warp: 16 rows x 1 key block
    sure_keep = (L > t).view(1, 8, N // 16, 16, nkb).any(3)
    maybe = (U > t).view(1, 8, N // 16, 16, nkb).any(3)
    undecided = maybe & ~sure_keep                                  # [1,8,N/16,nkb]
    cw = cand.repeat_interleave(4, 0)[None, None].expand_as(undecided)
    # warp tile: 16 rows x 4 key blocks
    uw = undecided.view(1, 8, N // 16, nkb // 4, 4).any(4)
    cwt = cw.reshape(1, 8, N // 16, nkb // 4, 4).any(4)
    # CTA tile: 128 rows (8 warp rows) x 4 key blocks
    ut = uw.view(1, 8, N // 128, 8, nkb // 4).any(3)
    ct = cwt.view(1, 8, N // 128, 8, nkb // 4).any(3)
    print(f"N={N} tau={tau}: kept {float(kept.sum()/(c.sum()*8)):.3f}; warp-blocks undecided {float((undecided&cw).sum()/cw.sum()):.3f}; "
          f"warp tiles needing exact {float((uw&cwt).sum()/cwt.sum()):.3f}; CTA tiles needing exact {float((ut&ct).sum()/ct.sum()):.3f}")
