"""Benchmark of SALE's estimate on Hopper (quantize + select) against the fastest dense attention.

    python -m profiler.bench_select [--lengths 8192 16384 ...] [--tiles default rows ...]
                                    [--estimate-rows 16 8] [--out runs/x.jsonl]

For each N: quantize ms, select ms for each selection tile configuration, every SDPA backend that
runs (the fastest is the baseline), and ratio = (quantize + select) / fastest dense. Llama-3.1-8B
attention shapes by default (B=1, 32 query heads, 8 kv heads, D=128, bf16), structured workload.
It also checks the triton mask against the reference on `--check-heads` query heads (ties counted).

`--estimate-rows r ...` also times the reduced-work option SaleConfig(estimate_rows=r) (every
(64/r)-th query row estimated; a subset of the exact mask) and measures what it costs in accuracy
against the exact mask on the same inputs: the share of the exact mask's kept candidate blocks it
keeps (all heads), and, up to `--accuracy-max-len`, on `--check-heads` heads, the attention mass
recall and the output error (relative L1 against cuDNN dense) of SALE with each mask.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import uuid

import torch

import sale
from sale._io import append_line
from sale.triton.select_gluon import GLUON_PROBES, GLUON_SELECT_CONFIGS, gluon_select_supported, select_gluon
from sale.triton.select_kernel import COMPILED_STATS, PROBE_CONFIGS, SELECT_CONFIGS, select_triton
from sale.workloads import make_qkv

from .baselines import dense_medians
from .gpu_context import git_commit, nvml_snapshot, software_versions
from .timing import time_cuda

def first_heads(q, k, v, heads):
    """q, k, v restricted to the whole kv groups that cover the first `heads` query heads."""
    group = q.shape[1] // k.shape[1]
    kv = max(1, math.ceil(heads / group))
    return (q[:, : kv * group].contiguous(), k[:, :kv].contiguous(),
            None if v is None else v[:, :kv].contiguous())


def mask_agreement(q, k, tau, cfg, heads):
    """Blocks where the triton mask differs from the reference on the first `heads` query heads, and
    how many of those are ties (|reference margin| < 1e-3)."""
    qs, ks, _ = first_heads(q, k, None, heads)
    mask_t = sale.select_blocks(qs, ks, tau, cfg.replace(backend="triton"))
    mask_r, margin_r = sale.select_blocks(qs, ks, tau, cfg.replace(backend="reference"), return_margin=True)
    differ = mask_t != mask_r
    return {"blocks": int(differ.numel()), "differ": int(differ.sum()),
            "ties": int((differ & (margin_r.abs() < 1e-3)).sum()),
            "max_abs_margin_differing": float(margin_r[differ].abs().max()) if differ.any() else None,
            "max_abs_margin": float(margin_r[torch.isfinite(margin_r)].abs().max()) if torch.isfinite(margin_r).any() else None}


def candidate_recall(mask, exact, seq_len, cfg):
    """Share of the exact mask's kept candidate blocks (neither sink nor local) that `mask` keeps."""
    cand = sale.candidate_blocks(seq_len, cfg, mask.device)
    kept_exact = exact & cand
    total = int(kept_exact.sum())
    return 1.0 if total == 0 else int((mask & kept_exact).sum()) / total


def mask_accuracy(q, k, v, masks, cfg, heads, dense_out):
    """Attention mass recall (mean, min over rows) and rel. L1 output error against dense attention of
    SALE with each mask, on the first `heads` query heads (whole kv groups)."""
    qs, ks, vs = first_heads(q, k, v, heads)
    nh = qs.shape[1]
    out = {}
    for name, mask in masks.items():
        m = mask[:, :nh].contiguous()
        rec_mean, rec_min = sale.attention_recall(qs, ks, m, cfg.replace(backend="reference"))
        o = sale.block_sparse_attention(qs, ks, vs, m, cfg)
        out[name] = {"recall_mean": float(rec_mean.mean()), "recall_min": float(rec_min.min()),
                     "rel_l1_vs_dense": float(sale.relative_l1(o, dense_out[:, :nh]).mean())}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072])
    p.add_argument("--tiles", nargs="+", default=list(SELECT_CONFIGS), choices=list(SELECT_CONFIGS) + list(PROBE_CONFIGS),
                   help="selection tile configurations to time (probe_* give wrong masks: ablation timings only)")
    p.add_argument("--gluon-tiles", nargs="*", default=list(GLUON_SELECT_CONFIGS),
                   choices=list(GLUON_SELECT_CONFIGS) + list(GLUON_PROBES),
                   help="Gluon estimate configurations to time on Hopper (select_gluon.py; probe_* give wrong masks)")
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--block-q", type=int, default=64, help="query rows per mask block (SALE's default 64)")
    p.add_argument("--threshold", type=float, default=0.01)
    p.add_argument("--check-heads", type=int, default=4, help="query heads checked against the reference (0: none)")
    p.add_argument("--estimate-rows", type=int, nargs="*", default=[16, 8],
                   help="also time SaleConfig(estimate_rows=r) for each r (reduced-work estimate; changes the mask)")
    p.add_argument("--accuracy-max-len", type=int, default=16384,
                   help="longest N at which attention recall and output error of the estimate_rows masks are measured")
    p.add_argument("--option-check-max-len", type=int, default=32768,
                   help="longest N at which the estimate_rows masks are also checked against the reference")
    p.add_argument("--out", default="runs/bench_select.jsonl", help="default runs/bench_select.jsonl (git-ignored)")
    args = p.parse_args(argv)
    from sale._cli import benchmark_preflight
    if benchmark_preflight("python -m profiler bench-select", args.out):
        return 2
    cfg = sale.SaleConfig(backend="triton", check_finite=False, block_q=args.block_q)
    run_id = uuid.uuid4().hex[:12]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    rows = []
    for n in args.lengths:
        q = k = v = dense_out = None
        try:
            q, k, v = make_qkv("structured", 1, args.q_heads, args.kv_heads, n, args.head_dim, torch.bfloat16,
                               "cuda", seed=n)
            with_accuracy = bool(args.check_heads and args.estimate_rows and n <= args.accuracy_max_len)
            dense, fastest_name, fastest_ms, dense_out = dense_medians(q, k, v, with_output=with_accuracy)
            quant_t = time_cuda(lambda: sale.quantize(q, k, cfg), budget_s=1.0)
            quant = sale.quantize(q, k, cfg)
            tau = torch.full((args.q_heads,), args.threshold, device="cuda")
            selects = {}
            mask_default = select_triton(q, k, tau, cfg, quant)[0]
            runners = {tile: (lambda c, tile=tile: select_triton(q, k, tau, c, quant, tile=tile)) for tile in args.tiles}
            if gluon_select_supported(q, cfg):
                runners.update({tile: (lambda c, tile=tile: select_gluon(q, k, tau, c, quant, tile=tile))
                                for tile in args.gluon_tiles})
            probes = set(PROBE_CONFIGS) | set(GLUON_PROBES)
            for tile, run in runners.items():
                print(f"  timing tile {tile}", flush=True)
                try:
                    selects[tile] = time_cuda(lambda: run(cfg), budget_s=1.0)
                    if tile not in probes:  # every real configuration must give the very same mask
                        selects[tile]["mask_equal_default"] = bool(torch.equal(run(cfg)[0], mask_default))
                except Exception as exc:  # a tile that fails to compile is recorded, not fatal
                    selects[tile] = {"error": str(exc).splitlines()[0][:200]}
            bad = [t for t, s in selects.items() if s.get("mask_equal_default") is False]
            if bad:
                print(f"  MASK MISMATCH against the default tile: {bad}")
            good = [(s["median_ms"], t) for t, s in selects.items() if "median_ms" in s and s.get("mask_equal_default")]
            if not good:
                raise RuntimeError(f"no tile ran with the default tile's mask: {selects}")
            best_tile = min(good)[1]
            mask = mask_default  # every tile in `good` gave exactly this mask
            agreement = mask_agreement(q, k, args.threshold, cfg, args.check_heads) if args.check_heads else None
            est = quant_t["median_ms"] + selects[best_tile]["median_ms"]
            reduced, masks = {}, {"exact": mask}
            for r in args.estimate_rows:
                rcfg = cfg.replace(estimate_rows=r)
                print(f"  timing estimate_rows={r}", flush=True)
                try:
                    t = time_cuda(lambda: select_triton(q, k, tau, rcfg, quant), budget_s=1.0)
                    masks[f"rows{r}"] = rmask = select_triton(q, k, tau, rcfg, quant)[0]
                    by_tile = {"default": t["median_ms"]}
                    for tile in (args.gluon_tiles if gluon_select_supported(q, rcfg) else []):
                        if tile in GLUON_PROBES:
                            continue
                        tg = time_cuda(lambda: select_gluon(q, k, tau, rcfg, quant, tile=tile), budget_s=1.0)
                        if torch.equal(select_gluon(q, k, tau, rcfg, quant, tile=tile)[0], rmask):
                            by_tile[tile] = tg["median_ms"]
                        else:
                            print(f"  MASK MISMATCH of {tile} at estimate_rows={r}")
                    if min(by_tile.values()) < t["median_ms"]:
                        t = {"median_ms": min(by_tile.values()), "min_ms": None, "max_ms": None}
                    reduced[str(r)] = {"select_ms_by_tile": by_tile,
                        "select_ms": t["median_ms"], "select_spread_ms": [t["min_ms"], t["max_ms"]],
                        "estimate_pct_of_dense": 100 * (quant_t["median_ms"] + t["median_ms"]) / fastest_ms,
                        "density": float(sale.density(rmask, n, cfg).mean()),
                        "subset_of_exact": not bool((rmask & ~mask).any()),
                        "candidate_recall_vs_exact": candidate_recall(rmask, mask, n, cfg),
                        "mask_vs_reference": (mask_agreement(q, k, args.threshold, rcfg, args.check_heads)
                                              if args.check_heads and n <= args.option_check_max_len else None)}
                except (torch.OutOfMemoryError, RuntimeError) as exc:
                    reduced[str(r)] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            accuracy = None
            if with_accuracy:
                accuracy = mask_accuracy(q, k, v, masks, cfg, args.check_heads, dense_out)
                dense_out = None
            rec = {
                "schema": "sale-bench-select/1", "run_id": run_id, "git_commit": git_commit(),
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(), "gpu": torch.cuda.get_device_name(),
                "seq_len": n, "batch": 1, "block_q": args.block_q, "num_q_heads": args.q_heads, "num_kv_heads": args.kv_heads,
                "head_dim": args.head_dim, "dtype": "bfloat16", "workload": "structured", "threshold": args.threshold,
                "quantize_ms": quant_t["median_ms"], "select_ms": {t: s.get("median_ms") for t, s in selects.items()},
                "select_spread_ms": {t: [s.get("min_ms"), s.get("max_ms")] for t, s in selects.items()},
                "select_errors": {t: s["error"] for t, s in selects.items() if "error" in s},
                "select_compiled": dict(COMPILED_STATS),
                "select_mask_equal_default": {t: s.get("mask_equal_default") for t, s in selects.items()},
                "best_tile": best_tile, "dense_ms": dense, "dense_backend": fastest_name, "fastest_dense_ms": fastest_ms,
                "estimate_pct_of_dense": 100 * est / fastest_ms,
                "density": float(sale.density(mask, n, cfg).mean()),
                "mask_vs_reference": agreement, "estimate_rows": reduced, "estimate_rows_accuracy": accuracy,
                "gpu_context": nvml_snapshot(), "software": software_versions(),
            }
        except (torch.OutOfMemoryError, RuntimeError) as exc:  # recorded; the next length still runs
            rec = {"schema": "sale-bench-select/1", "run_id": run_id, "seq_len": n,
                   "error": f"{type(exc).__name__}: {exc}"[:500]}
        rows.append(rec)
        append_line(args.out, json.dumps(rec))
        if "error" not in rec:
            print(f"N={n:>6} quant {rec['quantize_ms']:7.2f} ms  select[{best_tile}] {selects[best_tile]['median_ms']:7.2f} ms  "
                  f"dense {fastest_name} {fastest_ms:8.2f} ms  estimate/dense {rec['estimate_pct_of_dense']:5.1f}%  "
                  f"density {rec['density']:.3f}  mask diff {agreement}", flush=True)
            print("         tiles: " + "  ".join(f"{t}={s.get('median_ms', float('nan')):.2f}"
                                           f"{'' if t not in COMPILED_STATS else '(r%d,sp%d)' % (COMPILED_STATS[t]['n_regs'], COMPILED_STATS[t]['n_spills'])}"
                                           for t, s in selects.items())
                  + "   dense: " + "  ".join(f"{b}={t if t is None else round(t, 2)}" for b, t in dense.items()), flush=True)
            for r, red in reduced.items():
                if "error" in red:
                    print(f"         estimate_rows={r}: {red['error']}")
                    continue
                acc = (accuracy or {}).get(f"rows{r}")
                print(f"         estimate_rows={r:>2}: select {red['select_ms']:7.2f} ms  estimate/dense "
                      f"{red['estimate_pct_of_dense']:5.1f}%  density {red['density']:.3f}  kept-candidate recall vs "
                      f"exact {red['candidate_recall_vs_exact']:.4f}  subset {red['subset_of_exact']}  mask diff "
                      f"{red['mask_vs_reference']}" + (f"  attn recall {acc['recall_mean']:.4f} (exact "
                      f"{accuracy['exact']['recall_mean']:.4f})  rel.L1 {acc['rel_l1_vs_dense']:.4f} (exact "
                      f"{accuracy['exact']['rel_l1_vs_dense']:.4f})" if acc else ""), flush=True)
        else:
            print(f"N={n}: {rec['error']}")
        q = k = v = dense_out = None  # free the inputs before the next length
        torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    main()
