"""Run 34e (device): how many K/V block copies a computation pass that shares its loads more widely than one pair
of query blocks would save, on SALE's masks (structured workload, B=1, 32 q / 8 kv heads, D=128).

The split kernel copies, for each pair of query blocks (2j, 2j + 1) of each q head, the union of the two blocks'
kept key blocks: a block kept by one of them feeds 64 query rows, one kept by both 128 (run 34a: the "only" steps
are then bound by L2 -> SM bandwidth). Counted here, in 32-key blocks (causal part only):
- kept: sum over query blocks of kept blocks (the work, in 64-row block units);
- pair: sum over pairs of the union (what the split kernel copies);
- two heads / four heads: the union over the same pair of query blocks of 2 or 4 q heads of one kv group (what
  a cluster of CTAs multicasting each copy to all of them would copy);
- four blocks: the union over 4 consecutive query blocks of one head.
Each as copies per 64-row block unit of work (1 = no sharing, 0.5 = every copy feeds 128 rows).

    python3 notes/dev_runs/run34_shared_loads.py
"""
import torch

import sale
from sale import SaleConfig
from sale.blocks import causal_blocks
from sale.workloads import make_qkv

TAUS = {32768: {0.25: 0.018842845378090892, 0.1: 0.0736111087729972},
        65536: {0.25: 0.01728991940045639, 0.1: 0.055542945389795574}}   # the benchmark's, traces/


def union_over(mask, dim, size):
    """Union of the mask over groups of `size` consecutive entries of dimension `dim` (padded with False)."""
    pad = (-mask.shape[dim]) % size
    if pad:
        shape = list(mask.shape)
        shape[dim] = pad
        mask = torch.cat([mask, mask.new_zeros(shape)], dim)
    shape = list(mask.shape)
    shape[dim:dim + 1] = [shape[dim] // size, size]
    return mask.view(shape).any(dim + 1)


def main():
    cfg = SaleConfig(backend="triton", check_finite=False)
    for n, taus in TAUS.items():
        q, k, _ = make_qkv("structured", 1, 32, 8, n, 128, torch.bfloat16, "cuda", seed=n)
        for density, tau in taus.items():
            mask = sale.select_blocks(q, k, tau, cfg) & causal_blocks(n, cfg, q.device)
            got = float(sale.density(mask, n, cfg).mean())
            kept = int(mask.sum())
            pair = union_over(mask, 2, 2)                                   # [1, 32, nqb/2, nkb]
            counts = {"pair": int(pair.sum()),
                      "two heads": int(union_over(pair, 1, 2).sum()),
                      "four heads": int(union_over(pair, 1, 4).sum()),
                      "four blocks": int(union_over(mask, 2, 4).sum())}
            print(f"N={n} density {got:.3f}: kept {kept} block units; copies per unit: "
                  + ", ".join(f"{name} {c / kept:.3f}" for name, c in counts.items()), flush=True)
            del mask, pair


if __name__ == "__main__":
    main()
