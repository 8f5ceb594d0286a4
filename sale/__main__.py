"""`python -m sale demo`: run SALE on a structured input and print density, error and recall per head."""
from __future__ import annotations

import argparse
import sys

import torch

from . import (SaleConfig, attention_recall, candidate_density, cosine_similarity, dense_attention, density,
               relative_l1, sale_attention)
from .workloads import WORKLOADS, make_qkv


def demo(args) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    backend = args.backend or ("triton" if device == "cuda" else "reference")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    config = SaleConfig(backend=backend)
    q, k, v = make_qkv(args.workload, batch=1, num_q_heads=args.q_heads, num_kv_heads=args.kv_heads,
                       seq_len=args.seq_len, head_dim=args.head_dim, dtype=dtype, device=device, seed=args.seed)
    out, stats = sale_attention(q, k, v, args.threshold, config, return_stats=True)
    ref = dense_attention(q, k, v)
    rec_mean, rec_min = attention_recall(q, k, stats.mask, config)
    cand = candidate_density(stats.mask, args.seq_len, config)
    err, cos = relative_l1(out, ref), cosine_similarity(out, ref)
    print(f"SALE {backend} on {device}: workload={args.workload} N={args.seq_len} Hq={args.q_heads} "
          f"Hkv={args.kv_heads} D={args.head_dim} {args.dtype} tau={args.threshold}")
    print(f"{'head':>4} {'density':>8} {'cand.dens':>9} {'rel.L1':>8} {'cosine':>8} {'recall':>7} {'min.rec':>7}")
    for h in range(args.q_heads):
        print(f"{h:>4} {float(stats.density[0, h]):8.3f} {float(cand[0, h]):9.3f} {float(err[0, h]):8.4f} "
              f"{float(cos[0, h]):8.5f} {float(rec_mean[0, h]):7.4f} {float(rec_min[0, h]):7.4f}")
    print(f"mean {float(density(stats.mask, args.seq_len, config).mean()):8.3f} {float(cand.mean()):9.3f} "
          f"{float(err.mean()):8.4f} {float(cos.mean()):8.5f} {float(rec_mean.mean()):7.4f} {float(rec_min.min()):7.4f}")
    return 0


def calibrate_cmd(args) -> int:
    from tqdm.auto import tqdm

    from .calibrate import calibrate, write_thresholds
    q, k, v = make_qkv(args.workload, 1, args.q_heads, args.kv_heads, args.seq_len, args.head_dim, torch.float32,
                       "cpu", seed=args.seed)
    bar = tqdm(total=args.q_heads, desc=f"calibrating theta={args.theta}", unit="head")
    results = calibrate(q, k, v, args.theta, args.method, SaleConfig(), progress=lambda h: bar.update(1))
    bar.close()
    out = args.out or f"traces/thresholds_{args.workload}_theta{args.theta}_{args.method}.json"
    write_thresholds(out, [results], model=f"synthetic {args.workload} workload (seed {args.seed})", theta=args.theta,
                     method=args.method, prompts=[], extra={"seq_len": args.seq_len, "head_dim": args.head_dim,
                                                            "num_kv_heads": args.kv_heads})
    print(f"{'head':>4} {'tau':>9} {'err/token':>9} {'density':>8} {'steps':>5}")
    for h, r in enumerate(results):
        print(f"{h:>4} {r.threshold:9.2e} {r.error_per_token:9.4f} {r.density:8.3f} {r.evaluations:>5}")
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="SALE vs dense attention on a synthetic LLM-like input, per head")
    p.add_argument("--workload", choices=WORKLOADS, default="structured")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--q-heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="fp32")
    p.add_argument("--threshold", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--backend", choices=["reference", "triton"], default=None,
                   help="default: triton on cuda, reference on cpu")
    p.set_defaults(func=demo)
    c = sub.add_parser("calibrate", help="per-head thresholds for an error target theta (SALE-SPEC section 4)")
    c.add_argument("--theta", type=float, default=0.4, help="target: sum |O_sale - O_dense| over [N, D] < theta * N")
    c.add_argument("--method", choices=["halving", "bisection"], default="halving")
    c.add_argument("--workload", choices=WORKLOADS, default="structured")
    c.add_argument("--seq-len", type=int, default=2048)
    c.add_argument("--q-heads", type=int, default=8)
    c.add_argument("--kv-heads", type=int, default=2)
    c.add_argument("--head-dim", type=int, default=128)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", default=None)
    c.set_defaults(func=calibrate_cmd)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
