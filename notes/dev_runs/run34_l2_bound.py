"""Run 34a (device): is the split kernel's low-density step bound by L2 -> shared memory bandwidth?

Two measurements, at N = 65536 (B=1, 32 q / 8 kv heads, D=128, bf16):
1. Synthetic split rings (run 33a's ``synthetic_union``, read as tile gluon_split_p) of "both", excess and halved
   steps, on persistent grids of 132, 66 and 33 programs. A step's cost that falls when fewer SMs run at once is
   bandwidth shared between SMs, not latency inside one. Each line also prints the K/V bytes the ring copies per
   second (64 KiB per step of 128 keys).
2. SALE's masks at densities 1 to 0.05 (the benchmark's thresholds): gluon_split_p's time and the K/V bytes its
   rings copy per second, against cuDNN's time and the bytes a 128-row dense tile would copy.

    python3 notes/dev_runs/run34_l2_bound.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from run33_union_costs import synthetic_union  # noqa: E402

import sale  # noqa: E402
from profiler.timing import time_cuda  # noqa: E402
from sale import SaleConfig  # noqa: E402
from sale.blocks import causal_blocks, mask_to_kept  # noqa: E402
from sale.triton.attend_gluon import attend_union_gluon  # noqa: E402
from sale.triton.attend_kernel import kept_to_union  # noqa: E402
from sale.workloads import make_qkv  # noqa: E402

STEP_BYTES = 2 * 128 * 128 * 2   # K and V of 128 keys, D = 128, bf16
TAUS_64K = {1.0: 0.0, 0.5: 0.003436630281380217, 0.25: 0.01728991940045639, 0.1: 0.055542945389795574,
            0.05: 0.11335569901218896}   # traces/h100_bench_attend_gluon_split.jsonl, 64K


def main():
    n, heads, kv_heads = 65536, 32, 8
    cfg = SaleConfig(backend="triton", check_finite=False)
    q, k, v = make_qkv("structured", 1, heads, kv_heads, n, 128, torch.bfloat16, "cuda", seed=n)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    rings = [("fixed", 0, 0, 0, 1), ("both 16", 16, 0, 0, 1), ("excess 16", 0, 0, 16, 1), ("halved 16", 0, 8, 0, 1),
             ("both 32", 32, 0, 0, 1), ("excess 32", 0, 0, 32, 1), ("halved 32", 0, 16, 0, 1)]
    for programs in (sms, sms // 2, sms // 4):
        base = None
        for name, both, alt, exc, mixed in rings:
            union = synthetic_union(heads, n, cfg, both, alt, exc, mixed)
            union.split = True
            n_tiles = union.counts.shape[2] * heads
            ms = time_cuda(lambda: attend_union_gluon(q, k, v, union, cfg, split=True, persistent=True,
                                                      programs=programs), budget_s=0.3)["median_ms"]
            per_tile = ms * 1000 * programs / n_tiles
            base = per_tile if name == "fixed" else base
            steps = both + 2 * alt + exc
            tb = n_tiles * (steps + mixed) * STEP_BYTES / (ms * 1e-3) / 1e12
            print(f"programs {programs:3d} ring {name:10s}: {ms:7.3f} ms, {per_tile:6.2f} us per pair, "
                  f"{(per_tile - base) / max(steps, 1):5.3f} us per step over the fixed ring, K/V {tb:5.2f} TB/s",
                  flush=True)
    dense = time_cuda(lambda: sale.sdpa_attention(q, k, v, "cudnn"), budget_s=0.5)["median_ms"]
    dense_bytes = heads * (n // 128) * (n / 2 + 64) * 2 * 128 * 2   # 128-row tiles, causal: ~N/2 keys each
    print(f"cuDNN: {dense:.2f} ms; a 128-row dense tile's K/V copies would be {dense_bytes / dense / 1e9:.2f} TB/s")
    for density, tau in TAUS_64K.items():
        mask = sale.select_blocks(q, k, tau, cfg) if tau > 0 else None
        if mask is None:
            nqb, nkb = -(-n // 64), -(-n // 32)
            mask = torch.ones(1, heads, nqb, nkb, dtype=torch.bool, device="cuda")
        got = float(sale.density(mask, n, cfg).mean())
        kept = mask_to_kept(mask & causal_blocks(n, cfg, mask.device))
        union = kept_to_union(kept, cfg, 4, True)
        ms = time_cuda(lambda: attend_union_gluon(q, k, v, union, cfg, split=True, persistent=True),
                       budget_s=0.5)["median_ms"]
        c = union.counts.long()
        steps = int(c[..., 0].sum())
        tb = steps * STEP_BYTES / (ms * 1e-3) / 1e12
        both, only = int(c[..., 1].sum()), int((c[..., 2] + c[..., 3]).sum())
        excess = int((c[..., 2] - c[..., 3]).abs().sum())
        print(f"density {got:.3f}: gluon_split_p {ms:7.3f} ms, efficiency {got * dense / ms:.3f}, K/V {tb:5.2f} TB/s; "
              f"steps {steps}: both {both / steps:.2f}, only {only / steps:.2f} (excess {excess / steps:.2f}), "
              f"mixed {(steps - both - only) / steps:.2f}", flush=True)


if __name__ == "__main__":
    main()
