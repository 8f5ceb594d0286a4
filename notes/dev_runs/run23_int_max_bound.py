"""Run 23 (session 3, CPU): would an exact integer-max bound let the estimate skip tiles? Per (row, 32-key
block): max_j s_hat_ij <= sq_i * (skmax or skmin) * max_j dot_ij + max_j qmk_j (one integer max per
element instead of the scaled float epilogue); a 128x128 tile (2 query x 4 key blocks) whose 8 bounds all
fall below t_i could skip the exact epilogue with the mask unchanged.
    python3 notes/dev_runs/run23_int_max_bound.py [N]      (repo root, CPU)"""
import sys

import torch

sys.path.insert(0, ".")
import sale  # noqa: E402
from sale.reference import _grouped, quantize_reference, row_statistics, row_thresholds  # noqa: E402
from sale.workloads import make_qkv  # noqa: E402


def estimate_terms(n):
    """The structured workload at n tokens (8 query heads, 2 kv heads, D=128, seed n) under the default
    config: (config, softmax scale, sink/local statistics m and l, integer dots [1, 8, n, n], sq, sk, qmk)."""
    torch.manual_seed(0)
    q, k, v = make_qkv("structured", 1, 8, 2, n, 128, torch.float32, "cpu", seed=n)
    cfg = sale.SaleConfig()
    quant = quantize_reference(q, k, cfg)
    m, l = row_statistics(q, k, quant.k_mean, cfg, slice(0, n))
    qh = _grouped(quant.q_hat.float(), 2)
    dot = (qh @ quant.k_hat.float()[:, :, None].transpose(-1, -2)).flatten(1, 2)   # [1, 8, n, n]
    sq = quant.q_scale.float()[..., None]
    sk = quant.k_scale.float().repeat_interleave(4, 1)[:, :, None, :]
    qmk = quant.qmk.float()[:, :, None, :]
    return cfg, cfg.scale_for(128), m, l, dot, sq, sk, qmk


def main():
    N = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
    cfg, scale, m, l, dot, sq, sk, qmk = estimate_terms(N)
    nkb = N // 32
    d4 = dot.view(1, 8, N, nkb, 32)
    imax = d4.amax(-1)
    skb = sk.view(1, 8, 1, nkb, 32); skmax, skmin = skb.amax(-1), skb.amin(-1)
    qmkmax = qmk.view(1, 8, 1, nkb, 32).amax(-1)
    exact = (dot * sq * sk + qmk).view(1, 8, N, nkb, 32).amax(-1)
    bound = torch.where(imax >= 0, sq * skmax * imax, sq * skmin * imax) + qmkmax
    bound = bound + 1e-4 * bound.abs() + 1e-4
    assert (bound >= exact).all()
    cand = sale.blocks.candidate_blocks(N, cfg, "cpu")   # [nqb, nkb]
    for tau in (0.001, 0.01, 0.03):
        t = row_thresholds(m, l, torch.full((8,), tau), scale)
        bm = (bound - t[..., None]).view(1, 8, N // 64, 64, nkb).amax(3)   # [1,8,nqb,nkb]
        em = (exact - t[..., None]).view(1, 8, N // 64, 64, nkb).amax(3)
        c = cand[None, None]
        kept = (em > 0) & c
        maybe = (bm > 0) & c
        # tiles of 2 query blocks x 4 key blocks
        tm = maybe.view(1, 8, N // 128, 2, nkb // 4, 4).any(5).any(3)
        tc = c.expand_as(maybe).reshape(1, 8, N // 128, 2, nkb // 4, 4).any(5).any(3)
        print(f"N={N} tau={tau}: kept {float(kept.sum()/(c.sum()*8)):.3f} of candidate blocks, bound-passing {float(maybe.sum()/(c.sum()*8)):.3f}; "
              f"candidate tiles needing the exact epilogue {float(tm.sum()/tc.sum()):.3f}")


if __name__ == "__main__":
    main()
