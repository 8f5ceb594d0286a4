"""Run 33a (device): what each kind of step of the union ring costs, and what a pair program costs by itself.

The Gluon union kernel (tile gluon_skip) is timed on synthetic rings (``blocks.UnionSteps`` written directly):
every pair of query blocks gets the same counts of "both" steps, alternating "only" pairs, excess "only" steps
of block 2j and mixed (masked) steps; each unmasked step names four random key blocks before the pair's first
row, each mixed step the four blocks of the pair's diagonal. Outputs are not checked (the rings are not a
mask's); the GPU tests check the kernel. Then, on SALE's masks of the structured workload, the converters
(kept_to_union, kept_to_steps) are timed apart from the kernels.

    python3 notes/dev_runs/run33_union_costs.py [N ...]   (default 16384)
    SPLIT=1 python3 notes/dev_runs/run33_union_costs.py 16384 65536   (run 33c: the rings read as tile gluon_split)
    FEW=1 python3 notes/dev_runs/run33_union_costs.py 8192   (run 33b: one head, 64 programs, fewer than the SMs:
                                                              each program's time alone, without the others' traffic)
"""
import os
import sys

import torch

from profiler.bench_attend import structured_mask_at_density
from profiler.timing import time_cuda
from sale import SaleConfig
from sale.blocks import UnionSteps, mask_to_kept, causal_blocks
from sale.triton.attend_gluon import attend_union_gluon
from sale.triton.attend_kernel import kept_to_steps, kept_to_union, attend_triton
from sale.workloads import make_qkv


def synthetic_union(heads, n, cfg, both, alt, exc, mixed, slots=4, seed=0):
    nqb = -(-n // cfg.block_q)
    nkb = -(-n // cfg.block_k)
    npair = -(-nqb // 2)
    s0, s1 = alt + exc, alt
    n_ring = both + s0 + s1 + mixed
    ncode = (-(-nkb // slots) + 1) * slots
    g = torch.Generator(device="cuda").manual_seed(seed)
    first0 = torch.arange(npair, device="cuda") * 2 * cfg.block_q // cfg.block_k        # first key block of row 2j
    blocks = (torch.rand(1, heads, npair, n_ring * slots, generator=g, device="cuda")
              * first0.clamp(min=1)[:, None]).long()
    diag = (first0[:, None] + torch.arange(slots, device="cuda")).clamp(max=nkb - 1)     # the pair's diagonal
    codes = torch.zeros(1, heads, npair, ncode, dtype=torch.int32, device="cuda")
    body = (4 * blocks + 3).to(torch.int32)
    body[..., (n_ring - mixed) * slots:] = (4 * diag + 3).repeat(1, mixed).to(torch.int32)
    codes[..., :n_ring * slots] = body
    counts = torch.tensor([n_ring, both, s0, s1], dtype=torch.int32, device="cuda").expand(1, heads, npair, 4)
    return UnionSteps(counts=counts.contiguous(), codes=codes, slots=slots)


def main():
    lengths = [int(a) for a in sys.argv[1:]] or [16384]
    cfg = SaleConfig(backend="triton")
    few = bool(os.environ.get("FEW"))
    slots = int(os.environ.get("SLOTS", "4"))   # 2: gluon_skip2's 64-key steps, 5 stages
    stages = 3 if slots == 4 else 5
    split = bool(os.environ.get("SPLIT"))       # run 33c: the same rings, "only" steps halved (tile gluon_split)
    heads, kv_heads, d = (1, 1, 128) if few else (32, 8, 128)
    for n in lengths:
        q, k, v = make_qkv("structured", 1, heads, kv_heads, n, d, torch.bfloat16, "cuda", seed=n)
        npair = -(-(-(-n // cfg.block_q)) // 2)
        per_sm = max(1.0, heads * npair / torch.cuda.get_device_properties(0).multi_processor_count)
        print(f"N={n}: {heads * npair} pair programs, {per_sm:.1f} per SM; us per program = ms * 1000 / {per_sm:.1f}")
        grid = [("fixed", 0, 0, 0, 1)]
        grid += [("both", x, 0, 0, 1) for x in (1, 2, 4, 8, 16, 32)]
        grid += [("alt", 0, x, 0, 1) for x in (1, 2, 4, 8, 16)]
        grid += [("excess", 0, 0, x, 1) for x in (1, 2, 4, 8, 16)]
        grid += [("mixed", 0, 0, 0, x) for x in (2, 3, 4, 8)]
        grid += [("both+excess", 8, 0, x, 1) for x in (4, 8)]
        for name, both, alt, exc, mixed in grid:
            union = synthetic_union(heads, n, cfg, both, alt, exc, mixed, slots)
            union.split = split   # random blocks either way: only the kernel's reading of the ring changes
            ms = time_cuda(lambda: attend_union_gluon(q, k, v, union, cfg, slots=slots, stages=stages, split=split),
                           budget_s=0.5)["median_ms"]
            print(f"  ring {name:12s} both {both:2d} alt pairs {alt:2d} excess {exc:2d} mixed {mixed}: {ms:7.3f} ms "
                  f"= {ms * 1000 / per_sm:6.2f} us per program", flush=True)
        for density in () if few or split else (0.5, 0.25, 0.1, 0.05):
            mask, _ = structured_mask_at_density(q, k, density, cfg)
            kept = mask_to_kept(mask & causal_blocks(n, cfg, mask.device))
            union = kept_to_union(kept, cfg, 4)
            t_conv = time_cuda(lambda: kept_to_union(kept, cfg, 4), budget_s=0.3)["median_ms"]
            t_split = time_cuda(lambda: kept_to_steps(kept, cfg), budget_s=0.3)["median_ms"]
            t_kernel = time_cuda(lambda: attend_union_gluon(q, k, v, union, cfg, slots=4, stages=3), budget_s=0.5)["median_ms"]
            t_all = time_cuda(lambda: attend_triton(q, k, v, mask, cfg, kept=kept, tile="gluon_skip"), budget_s=0.5)["median_ms"]
            c = union.counts.long()
            mix = (c[..., 0] - c[..., 1] - c[..., 2] - c[..., 3]).float().mean()
            print(f"  SALE mask density {density}: kept_to_union {t_conv:.3f} ms, kept_to_steps {t_split:.3f} ms, "
                  f"union kernel {t_kernel:.3f} ms, attend_triton {t_all:.3f} ms; per pair: both "
                  f"{c[..., 1].float().mean():.1f} only {(c[..., 2] + c[..., 3]).float().mean():.1f} excess "
                  f"{(c[..., 2] - c[..., 3]).abs().float().mean():.1f} mixed {mix:.2f}", flush=True)


if __name__ == "__main__":
    main()
