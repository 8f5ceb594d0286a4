"""Accuracy of the reduced-work estimate (SaleConfig.estimate_rows) against SALE's exact estimate, on
the same inputs, over a grid of thresholds: what the option costs in accuracy, at equal threshold and
at equal density.

For each head (of each captured layer), threshold and estimate option: density (kept causal blocks),
the share of the exact mask's kept candidate blocks the option keeps, the attention mass recall (mean
and min over rows), and the output error of SALE with that mask against dense attention (relative
L1). The masks come from the reference's threshold-free block scores (one estimate per option for
every threshold); attention runs in float32 (float64 with --float64). Writes one JSON line per
(layer, head, option, threshold), atomically, schema `sale-estimate-tradeoff/1`; prints a summary
with each option's error interpolated at the exact estimate's densities.

    python -m profiler estimate-tradeoff --from-capture capture.safetensors [--layers 2 10]
    python -m profiler estimate-tradeoff --seq-len 4096 --q-heads 8 --kv-heads 2 --head-dim 64
"""
from __future__ import annotations

import argparse
import datetime
import json
import math

import numpy as np
import torch

import sale
from sale._io import append_line
from sale.blocks import always_computed_blocks, candidate_blocks
from sale.reference import attention_reference, kept_attention_mass
from sale.workloads import make_qkv

from .gpu_context import git_commit, software_versions

SCHEMA = "sale-estimate-tradeoff/1"
TAU_GRID = [1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1]


def tradeoff(q, k, v, options, taus, config=None) -> list[dict]:
    """Rows {head, estimate_rows, threshold, density, candidate_recall_vs_exact, recall_mean,
    recall_min, rel_l1_vs_dense} for every query head of (q, k, v) [1, H, N, D]; options are
    estimate_rows values (None: the exact estimate, always computed first as the comparison)."""
    config = (config or sale.SaleConfig()).replace(backend="reference")
    n = q.shape[2]
    always = always_computed_blocks(n, config, q.device)
    cand = candidate_blocks(n, config, q.device)
    causal = always | cand
    dense = attention_reference(q, k, v, None, config).double()
    rows, exact_kept = [], {}
    for rows_opt in [None, *[o for o in options if o is not None]]:
        cfg = config.replace(estimate_rows=rows_opt)
        scores = sale.block_log_scores(q, k, cfg)                      # [1, H, nqb, nkb]
        for tau in taus:
            mask = always | (scores > math.log(tau))
            if rows_opt is None:
                exact_kept[tau] = mask & cand
            out = attention_reference(q, k, v, mask, config).double()
            mass = kept_attention_mass(q, k, mask, config)            # [1, H, N]
            err = sale.relative_l1(out, dense)[0]
            for h in range(q.shape[1]):
                ek = exact_kept[tau][0, h]
                kept_exact = int(ek.sum())
                rows.append({
                    "head": h, "estimate_rows": rows_opt, "threshold": tau,
                    "density": float((mask[0, h] & causal).sum() / causal.sum()),
                    "candidate_recall_vs_exact": 1.0 if kept_exact == 0 else int((mask[0, h] & ek).sum()) / kept_exact,
                    "recall_mean": float(mass[0, h].mean()), "recall_min": float(mass[0, h].min()),
                    "rel_l1_vs_dense": float(err[h])})
    return rows


def error_at_density(rows: list[dict], option) -> list[dict]:
    """Per threshold of the exact estimate: the option's error at the exact mask's density, per head
    interpolated in log density along the option's own threshold curve (heads whose curve does not
    reach that density are left out, never extrapolated), with the exact error on the same heads:
    [{threshold, density, error, exact_error, heads}], means over heads."""
    out = []
    heads = sorted({(r.get("layer"), r["head"]) for r in rows})
    exact = {(r.get("layer"), r["head"], r["threshold"]): r for r in rows if r["estimate_rows"] is None}
    for tau in sorted({r["threshold"] for r in rows}):
        dens, errs, exact_errs = [], [], []
        for key in heads:
            ref = exact[(*key, tau)]
            curve = sorted(((r["density"], r["rel_l1_vs_dense"]) for r in rows
                            if (r.get("layer"), r["head"]) == key and r["estimate_rows"] == option), key=lambda x: x[0])
            xs = np.log([max(c[0], 1e-9) for c in curve])
            x = math.log(max(ref["density"], 1e-9))
            if not (xs[0] <= x <= xs[-1]):
                continue
            dens.append(ref["density"])
            errs.append(float(np.interp(x, xs, [c[1] for c in curve])))
            exact_errs.append(ref["rel_l1_vs_dense"])
        if errs:
            out.append({"threshold": tau, "density": float(np.mean(dens)), "error": float(np.mean(errs)),
                        "exact_error": float(np.mean(exact_errs)), "heads": len(errs)})
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from-capture", default=None, help="a Q/K/V capture from `python -m sale capture`")
    p.add_argument("--layers", type=int, nargs="*", default=None, help="layers of the capture (default: all)")
    p.add_argument("--seq-len", type=int, default=4096, help="synthetic input length (without --from-capture)")
    p.add_argument("--q-heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--workload", default="structured", choices=["structured", "uniform"])
    p.add_argument("--estimate-rows", type=int, nargs="+", default=[32, 16, 8])
    p.add_argument("--thresholds", type=float, nargs="+", default=TAU_GRID)
    p.add_argument("--float64", action="store_true", help="float64 attention instead of float32")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/estimate_tradeoff.jsonl")
    args = p.parse_args(argv)
    for tau in args.thresholds:
        if not (tau > 0 and math.isfinite(tau)):
            raise SystemExit(f"--thresholds must be positive and finite, got {tau}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float64 if args.float64 else torch.float32
    if args.from_capture:
        from sale.llm_eval import load_qkv
        from safetensors import safe_open
        with safe_open(args.from_capture, framework="pt") as f:
            meta = json.loads(f.metadata()["sale"])
        layers = args.layers if args.layers is not None else meta["layers"]
        source = {"source": "capture", "capture": args.from_capture, "model": meta.get("model"),
                  "prompt": meta.get("prompt")}
        inputs = ((layer, *load_qkv(args.from_capture, layer)[:3]) for layer in layers)
    else:
        source = {"source": "synthetic", "workload": args.workload}
        inputs = iter([(None, *make_qkv(args.workload, 1, args.q_heads, args.kv_heads, args.seq_len, args.head_dim,
                                         dtype, device, seed=args.seq_len))])
    base = {"schema": SCHEMA, "git_commit": git_commit(), "software": software_versions(),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(), **source}
    everything = []
    for layer, q, k, v in inputs:
        q, k, v = (x.to(device=device, dtype=dtype) for x in (q, k, v))
        rows = tradeoff(q, k, v, args.estimate_rows, args.thresholds)
        for r in rows:
            r.update(base, layer=layer, seq_len=q.shape[2], head_dim=q.shape[3], num_q_heads=q.shape[1],
                     num_kv_heads=k.shape[1])
            append_line(args.out, json.dumps(r))
        everything += rows
        print(f"layer {layer}: {len(rows)} rows", flush=True)
    print(f"{'estimate_rows':>13} {'tau':>8} {'density':>8} {'cand.recall':>11} {'attn.recall':>11} {'rel.L1':>8}")
    for opt in [None, *args.estimate_rows]:
        for tau in args.thresholds:
            rs = [r for r in everything if r["estimate_rows"] == opt and r["threshold"] == tau]
            print(f"{opt or 'all':>13} {tau:>8g} {np.mean([r['density'] for r in rs]):8.3f} "
                  f"{np.mean([r['candidate_recall_vs_exact'] for r in rs]):11.4f} "
                  f"{np.mean([r['recall_mean'] for r in rs]):11.4f} {np.mean([r['rel_l1_vs_dense'] for r in rs]):8.4f}")
    print("error at the exact estimate's density (mean over heads, each interpolated along the option's thresholds):")
    for opt in args.estimate_rows:
        print(f"  estimate_rows={opt}: " + "  ".join(f"d={c['density']:.3f}: {c['error']:.4f} vs {c['exact_error']:.4f}"
                                                    f" ({c['heads']} heads)" for c in error_at_density(everything, opt)))
    print(f"trace: {args.out}")
    return everything


if __name__ == "__main__":
    main()
