"""Run 34d (device): the split kernel's per-pair work. Variants of gluon_split_p (persistent) and gluon_split
(one program per pair), timed in the same run:
- q loaded by each consumer at the pair's start (as in session 11) or copied by the producer's TMA once the
  consumer's last q . k of the previous pair is done (q_tma);
- each pair's counts loaded by the consumers or handed over with the tile by the producer (hand_counts).
On run 34a's synthetic rings (the fixed cost of a pair) and on SALE's masks at 16K-64K (densities 0.25, 0.1),
B=1, 32 q / 8 kv heads, D=128, bf16; cuDNN timed in the same run for the efficiency.

    git apply notes/dev_runs/run34d_q_tma.patch   (on 49ab69c: the kernel with the q_tma / hand_counts options,
                                                   measured and dropped, NOTES.md run 34d)
    python3 notes/dev_runs/run34_q_tma.py [N ...]   (default 16384 32768 65536)
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from run33_union_costs import synthetic_union  # noqa: E402

import sale  # noqa: E402
from profiler.bench_attend import structured_mask_at_density  # noqa: E402
from profiler.timing import time_cuda  # noqa: E402
from sale import SaleConfig  # noqa: E402
from sale.blocks import causal_blocks, mask_to_kept  # noqa: E402
from sale.triton.attend_gluon import attend_union_gluon  # noqa: E402
from sale.triton.attend_kernel import kept_to_union  # noqa: E402
from sale.workloads import make_qkv  # noqa: E402

VARIANTS = {   # name: (persistent, q_tma, hand_counts)
    "p (session 11)": (True, False, False), "p q_tma": (True, True, False), "p hand": (True, False, True),
    "p q_tma hand": (True, True, True), "split (session 11)": (False, False, False), "split q_tma": (False, True, False),
}


def time_variants(q, k, v, union, cfg):
    out = {}
    for name, (persistent, q_tma, hand) in VARIANTS.items():
        out[name] = time_cuda(lambda: attend_union_gluon(q, k, v, union, cfg, split=True, persistent=persistent,
                                                         q_tma=q_tma, hand_counts=hand if persistent else True),
                              budget_s=0.3)["median_ms"]
    return out


def main():
    lengths = [int(a) for a in sys.argv[1:]] or [16384, 32768, 65536]
    cfg = SaleConfig(backend="triton", check_finite=False)
    for n in lengths:
        q, k, v = make_qkv("structured", 1, 32, 8, n, 128, torch.bfloat16, "cuda", seed=n)
        pairs = 32 * (n // 128)
        ref = sale.sdpa_attention(q, k, v, "cudnn").float()
        cudnn = time_cuda(lambda: sale.sdpa_attention(q, k, v, "cudnn"), budget_s=0.5)["median_ms"]
        print(f"N={n}: cuDNN {cudnn:.3f} ms; {pairs} pairs", flush=True)
        for name, both, alt, exc, mixed in (("both 1, no mixed", 1, 0, 0, 0), ("both 8", 8, 0, 0, 1)):
            union = synthetic_union(32, n, cfg, both, alt, exc, mixed)
            union.split = True
            t = time_variants(q, k, v, union, cfg)
            print(f"  ring {name:16s}: " + "  ".join(f"{a} {ms * 132 / pairs * 1000:6.2f} us/pair" for a, ms in t.items()),
                  flush=True)
        for density in (1.0, 0.25, 0.1):
            mask, _ = structured_mask_at_density(q, k, density, cfg)
            got = float(sale.density(mask, n, cfg).mean())
            union = kept_to_union(mask_to_kept(mask & causal_blocks(n, cfg, mask.device)), cfg, 4, True)
            if density == 1.0:   # the new default's output against cuDNN's
                out = attend_union_gluon(q, k, v, union, cfg, split=True, persistent=True).float()
                print(f"  density 1: max |out - cuDNN| {float((out - ref).abs().max()):.2e}", flush=True)
                del out
            t = time_variants(q, k, v, union, cfg)
            print(f"  density {got:.3f}: " + "  ".join(f"{a} {ms:7.3f} ms ({got * cudnn / ms:.3f})" for a, ms in t.items()),
                  flush=True)
            del mask, union
        del ref


if __name__ == "__main__":
    main()
