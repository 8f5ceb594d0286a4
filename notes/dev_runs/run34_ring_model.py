"""Run 34c (device): where gluon_split_p's time on SALE's masks goes beyond run 34a's step costs.

At N = 65536 (B=1, 32 q / 8 kv heads, D=128, bf16), persistent grid of one program per SM:
1. Synthetic split rings (run 33a's ``synthetic_union``): the fixed ring without its mixed step, mixed steps,
   and one ring with every kind of step, against the sum of its parts.
2. SALE's masks at density ~0.25 and ~0.1 (the benchmark's thresholds), three ways: as selected; with the
   rings' counts kept but each unmasked step's blocks drawn at random before the pair (does the blocks' L2
   locality matter?); and every pair given the mean counts (does the spread of the pairs' lengths matter?).
   The per-pair counts are saved (counts_<density>.pt) for a CPU model of the time.

    OUT=dir python3 notes/dev_runs/run34_ring_model.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from run33_union_costs import synthetic_union  # noqa: E402

import sale  # noqa: E402
from profiler.timing import time_cuda  # noqa: E402
from sale import SaleConfig  # noqa: E402
from sale.blocks import UnionSteps, causal_blocks, mask_to_kept  # noqa: E402
from sale.triton.attend_gluon import attend_union_gluon  # noqa: E402
from sale.triton.attend_kernel import kept_to_union  # noqa: E402
from sale.workloads import make_qkv  # noqa: E402

TAUS_64K = {0.25: 0.01728991940045639, 0.1: 0.055542945389795574}


def timed(q, k, v, union, cfg):
    return time_cuda(lambda: attend_union_gluon(q, k, v, union, cfg, split=True, persistent=True),
                     budget_s=0.4)["median_ms"]


def random_blocks(union, cfg, seed=0):
    """The same rings with each unmasked step's blocks drawn at random before the pair's first row (flags kept)."""
    counts, codes = union.counts, union.codes.clone()
    slots = union.slots
    npair = codes.shape[2]
    unmasked = (counts[..., 1] + counts[..., 2] + counts[..., 3]) * slots   # entries of the unmasked steps
    pos = torch.arange(codes.shape[-1], device=codes.device)
    first = (torch.arange(npair, device=codes.device) * 2 * cfg.block_q // cfg.block_k).clamp(min=1)
    g = torch.Generator(device=codes.device).manual_seed(seed)
    drawn = (torch.rand(codes.shape, generator=g, device=codes.device) * first[:, None]).long()
    new = (4 * drawn + (codes & 3)).to(torch.int32)
    codes = torch.where(pos < unmasked[..., None], new, codes)
    return UnionSteps(counts=counts, codes=codes, slots=slots, split=True)


def main():
    out = os.environ.get("OUT", "/tmp/sale_out")
    n, heads, kv_heads = 65536, 32, 8
    cfg = SaleConfig(backend="triton", check_finite=False)
    q, k, v = make_qkv("structured", 1, heads, kv_heads, n, 128, torch.bfloat16, "cuda", seed=n)
    pairs = heads * (n // 64 // 2)
    per_pair = 132 / pairs * 1000   # ms -> us per pair on 132 programs
    rings = [("both 1, no mixed", 1, 0, 0, 0), ("fixed (mixed 1)", 0, 0, 0, 1), ("mixed 2", 0, 0, 0, 2),
             ("mixed 4", 0, 0, 0, 4), ("both 8", 8, 0, 0, 1), ("excess 8", 0, 0, 8, 1), ("halved 8", 0, 4, 0, 1),
             ("excess 8 + both 8 + halved 8", 8, 4, 8, 1)]
    for name, both, alt, exc, mixed in rings:
        union = synthetic_union(heads, n, cfg, both, alt, exc, mixed)
        union.split = True
        ms = timed(q, k, v, union, cfg)
        print(f"ring {name:30s}: {ms:7.3f} ms = {ms * per_pair:6.2f} us per pair", flush=True)
    for density, tau in TAUS_64K.items():
        mask = sale.select_blocks(q, k, tau, cfg)
        got = float(sale.density(mask, n, cfg).mean())
        union = kept_to_union(mask_to_kept(mask & causal_blocks(n, cfg, mask.device)), cfg, 4, True)
        del mask
        torch.save(union.counts.cpu(), f"{out}/counts_{density}.pt")
        c = union.counts.float()
        mean = c.mean(dim=(0, 1, 2))
        n_ring, s_both, s0, s1 = (float(x) for x in mean)
        t_real = timed(q, k, v, union, cfg)
        t_rand = timed(q, k, v, random_blocks(union, cfg), cfg)
        exc = abs(c[..., 2] - c[..., 3]).mean().item()
        halved = 2 * torch.minimum(c[..., 2], c[..., 3]).mean().item()
        mixed = n_ring - s_both - exc - halved
        eq = synthetic_union(heads, n, cfg, round(s_both), round(halved / 2), round(exc), max(1, round(mixed)))
        eq.split = True
        t_eq = timed(q, k, v, eq, cfg)
        print(f"density {got:.3f}: steps per pair {n_ring:.1f} (both {s_both:.1f}, excess {exc:.1f}, halved "
              f"{halved:.1f}, mixed {mixed:.2f}); as selected {t_real:.3f} ms = {t_real * per_pair:.1f} us per pair; "
              f"random blocks {t_rand:.3f} ms; every pair the mean counts (rounded, random blocks) {t_eq:.3f} ms",
              flush=True)


if __name__ == "__main__":
    main()
