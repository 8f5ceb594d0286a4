"""Run 26 (CPU): how much extra work a computation pass on 64-key contiguous tiles would do on SALE masks.

The run-24 probe ran dense 64-row x 64-key TMA tiles at 0.82-0.84 of cuDNN, against 0.54 for 32-key
steps. A pass that walks 64-key pairs (two adjacent 32-key blocks, one TMA box) computes a pair when
either block is kept and masks the other half, so it does extra work wherever a kept block's partner
is not kept. This prints, per threshold, the kept 32-key blocks and the 32-key blocks of the kept
pairs, on the structured workload (reference selection, float32).

    python3 notes/dev_runs/run26_pair_union.py [N (4096)]
"""
import sys

import torch

import sale
from sale.blocks import causal_blocks
from sale.workloads import make_qkv

n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
cfg = sale.SaleConfig()
q, k, _ = make_qkv("structured", 1, 8, 2, n, 128, torch.float32, "cpu", seed=n)
causal = causal_blocks(n, cfg, "cpu")
for tau in (0.001, 0.003, 0.01, 0.03, 0.1):
    mask = sale.select_blocks(q, k, tau, cfg) & causal
    nkb = mask.shape[-1]
    padded = torch.nn.functional.pad(mask, (0, nkb % 2))
    pairs = padded.reshape(*padded.shape[:-1], -1, 2).any(-1)
    pair_blocks = (pairs.repeat_interleave(2, -1)[..., :nkb] & causal).sum().item()
    kept = mask.sum().item()
    print(f"N={n} tau={tau}: density {kept / (causal.sum().item() * mask.shape[1]):.3f}, "
          f"64-key pairs compute {pair_blocks / kept:.3f}x the kept blocks")
