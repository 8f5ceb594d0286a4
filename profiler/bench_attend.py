"""Benchmark of SALE's computation pass (block-sparse attention) and of SALE end to end on Hopper.

    python -m profiler.bench_attend [--lengths 16384 32768 65536 131072] [--densities 1 .5 .25 .1 .05]

For each N: cuDNN (and every other SDPA backend that runs) dense ms; the project's Triton dense
attention (the same kernel with every causal block kept); for each density, a mask drawn at that
density (sink and local blocks always kept), its sparse ms and efficiency = density x cuDNN ms /
sparse ms; then SALE end to end (quantize + select + attend) on the structured workload at several
thresholds: ms, density, speedup over the fastest dense, and relative L1 error against cuDNN's output.

Tiles named NAME:int8 run that tile with `SaleConfig(int8_qk=True)` (the authors' INT8-QK variant,
q and k quantized inside the timed call); the record keeps their best time and efficiency apart from
the exact tiles' (int8_sparse_ms, int8_efficiency), with the relative errors of both forms' outputs
against float64 on the same mask (int8_rel_err, exact_rel_err) and of the int8 output against the exact
one (int8_vs_exact_rel_err).
`--qk exact int8` runs SALE end to end with each form.

With `--calibrate-theta THETA`, SALE end to end also runs at per-head thresholds calibrated on that
length's workload (docs/algorithm.md, "Thresholds": the authors' halving from tau = 0.008, error = sum over the
head's [N, D] output of |O_sale - O_dense| < THETA * N; THETA = 0.4 is theirs for Llama-3.1-8B), once
per `--estimate-rows` option (each option calibrated for itself): the density and speedup the paper's
3.36x target refers to. `--calibrate-len L` calibrates on the first L tokens' workload instead (faster
at 128K) and applies those thresholds at N.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import uuid

import torch

import sale
from sale._io import append_line
from sale.blocks import always_computed_blocks, candidate_blocks, causal_blocks, mask_to_kept
from sale.calibrate import METHODS, calibrate
from sale.triton.attend_kernel import ATTEND_CONFIGS, attend_triton, kept_to_steps
from sale.workloads import make_qkv

from .__main__ import _estimate_rows
from .baselines import dense_medians
from .gpu_context import git_commit, nvml_snapshot, software_versions
from .timing import time_cuda


def mask_at_density(density, batch, heads, n, cfg, seed, device="cuda"):
    """Sink and local blocks, plus candidate blocks drawn independently so the expected share of
    causal blocks kept is `density` (the always-computed share is a floor)."""
    causal, always, cand = (f(n, cfg, device) for f in (causal_blocks, always_computed_blocks, candidate_blocks))
    extra = max(0.0, density * causal.sum().item() - always.sum().item()) / max(1, cand.sum().item())
    g = torch.Generator(device=device).manual_seed(seed)
    drawn = torch.rand(batch, heads, *causal.shape, generator=g, device=device) < extra
    return (drawn & cand) | always


def structured_mask_at_density(q, k, density, cfg, steps=14):
    """SALE's own mask on the structured workload at one threshold for every head, the threshold found by
    bisection on log10(tau) so that the mean density comes closest to `density`: (mask, tau)."""
    from sale.triton.select_kernel import select_triton
    heads = q.shape[1]
    quant = sale.quantize(q, k, cfg)
    at = lambda tau: select_triton(q, k, torch.full((heads,), tau, device=q.device), cfg, quant)[0]
    if density >= 1.0:
        return at(0.0), 0.0
    lo, hi, best = -12.0, 0.0, None
    for _ in range(steps):  # the density falls as tau grows
        mid = (lo + hi) / 2
        mask = at(10.0 ** mid)
        got = float(sale.density(mask, q.shape[2], cfg).mean())
        if best is None or abs(got - density) < best[0]:
            best = (abs(got - density), mask, 10.0 ** mid)
        lo, hi = (mid, hi) if got > density else (lo, mid)
    return best[1], best[2]


def full_pair_share(kept, cfg) -> float:
    """Share of the kept blocks that the split form computes in full-pair (64-key) steps."""
    full_pairs = kept_to_steps(kept, cfg).counts[..., 0].sum(dtype=torch.int64)
    return float(2 * full_pairs) / max(1, int(kept.counts.sum(dtype=torch.int64)))


def sale_point(q, k, v, taus, cfg, dense, fastest_name, fastest, ref_out) -> dict:
    """SALE end to end at per-head thresholds taus [Hq]: each stage's median ms, the whole call's, the
    density, speedup over the fastest dense attention and relative L1 error against its output."""
    from sale.triton.select_kernel import select_triton
    quant = sale.quantize(q, k, cfg)
    mask, _, kept = select_triton(q, k, taus, cfg, quant, return_kept=True)
    stages = {"quantize_ms": time_cuda(lambda: sale.quantize(q, k, cfg), budget_s=0.5)["median_ms"],
              "select_ms": time_cuda(lambda: select_triton(q, k, taus, cfg, quant), budget_s=0.5)["median_ms"],
              "attend_ms": time_cuda(lambda: attend_triton(q, k, v, mask, cfg, kept=kept), budget_s=0.5)["median_ms"]}
    total = time_cuda(lambda: sale.sale_attention(q, k, v, taus, cfg), budget_s=1.0)["median_ms"]
    out = sale.sale_attention(q, k, v, taus, cfg)
    per_head = sale.density(mask, q.shape[2], cfg)[0]
    return {**stages, "sale_ms": total, "density": float(per_head.mean()), "density_per_head": per_head.tolist(),
            "dense_ms": dense, "fastest_dense_ms": fastest, "dense_backend": fastest_name, "speedup": fastest / total,
            "overhead_pct": 100 * (stages["quantize_ms"] + stages["select_ms"]) / fastest,
            "rel_l1_vs_dense": float(sale.relative_l1(out, ref_out).mean()),
            "gpu_context": nvml_snapshot(), "software": software_versions()}


def point_line(rec: dict) -> str:
    return (f"{rec['sale_ms']:8.2f} ms (q {rec['quantize_ms']:.2f} + s {rec['select_ms']:.2f} + a {rec['attend_ms']:.2f})  "
            f"density {rec['density']:.3f}  speedup {rec['speedup']:.2f}x  rel.L1 {rec['rel_l1_vs_dense']:.4f}")


def calibrated_thresholds(args, cfg, q, k, v):
    """Per-head thresholds calibrated on the structured workload of length calibrate_len (default: q's)."""
    length = args.calibrate_len or q.shape[2]
    if length != q.shape[2]:
        q, k, v = make_qkv("structured", 1, args.q_heads, args.kv_heads, length, args.head_dim, torch.bfloat16,
                           "cuda", seed=length)
    return calibrate(q, k, v, args.calibrate_theta, args.calibrate_method, cfg)


def _tile_spec(text: str) -> str:
    name, _, form = text.partition(":")
    if name not in ATTEND_CONFIGS or form not in ("", "int8"):
        raise argparse.ArgumentTypeError(f"a tile is NAME or NAME:int8 with NAME in {list(ATTEND_CONFIGS)}, got {text!r}")
    return text


def time_tiles(q, k, v, mask, kept, cfg, tiles) -> dict:
    """Median ms of each tile spec (None where it failed, with the reason printed)."""
    out = {}
    for spec in tiles:
        name, _, form = spec.partition(":")
        tcfg = cfg.replace(int8_qk=form == "int8")
        try:
            out[spec] = time_cuda(lambda: attend_triton(q, k, v, mask, tcfg, kept=kept, tile=name), budget_s=1.0)["median_ms"]
        except Exception as exc:
            out[spec] = None
            print(f"  tile {spec}: {str(exc).splitlines()[0][:120]}")
    return out


def int8_error(q, k, v, mask, kept, cfg, rows: int = 1024) -> dict:
    """Relative errors on one mask: the int8-QK and the exact outputs against float64 attention over the last
    `rows` query rows (where rows see the most keys), and the int8 output against the exact one (all rows)."""
    exact = attend_triton(q, k, v, mask, cfg, kept=kept)
    int8 = attend_triton(q, k, v, mask, cfg.replace(int8_qk=True), kept=kept)
    n = q.shape[2]
    sl = slice(max(0, n - rows), n)
    group = q.shape[1] // k.shape[1]
    ref = torch.empty(q[:, :, sl].shape, dtype=torch.float64, device=q.device)
    for h in range(q.shape[1]):  # one head at a time: a [rows, N] float64 score map each
        s = (q[:, h, sl].double() @ k[:, h // group].double().transpose(-1, -2)) * cfg.scale_for(q.shape[3])
        keep = sale.reference._token_block_mask(mask[:, h], sl, n, cfg)
        ref[:, h] = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1) @ v[:, h // group].double()
    rel = lambda x, r: float((x.double() - r).norm() / r.norm())
    return {"int8_rel_err": rel(int8[:, :, sl], ref), "exact_rel_err": rel(exact[:, :, sl], ref),
            "int8_vs_exact_rel_err": rel(int8, exact.double())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[16384, 32768, 65536, 131072])
    p.add_argument("--densities", type=float, nargs="*", default=[1.0, 0.5, 0.25, 0.1, 0.05],
                   help="mask densities of the computation-pass timing (none: skip)")
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.003, 0.01, 0.03, 0.1],
                   help="fixed thresholds for SALE end to end (none: skip)")
    p.add_argument("--tiles", nargs="+", default=list(ATTEND_CONFIGS), type=_tile_spec,
                   help="computation-pass tiles to time (ATTEND_CONFIGS names; NAME:int8 with int8 q . k)")
    p.add_argument("--qk", nargs="+", choices=["exact", "int8"], default=["exact"],
                   help="q . k of SALE end to end: exact 16-bit and/or int8 (SaleConfig.int8_qk)")
    p.add_argument("--mask-source", nargs="+", choices=["random", "structured"], default=["random", "structured"],
                   help="masks of the computation-pass timing: candidate blocks drawn independently at the "
                        "density, or SALE's own mask on the structured workload at the threshold giving it")
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--block-q", type=int, default=64, help="query rows per mask block (SALE's default 64)")
    p.add_argument("--calibrate-theta", type=float, default=None,
                   help="also run SALE at per-head thresholds calibrated to this theta (0.4: Llama-3.1-8B)")
    p.add_argument("--calibrate-method", choices=METHODS, default="halving")
    p.add_argument("--calibrate-len", type=int, default=None, help="calibrate on this length (default: each N)")
    p.add_argument("--estimate-rows", nargs="+", default=[None], type=_estimate_rows,
                   help="estimate options of the calibrated runs: 'all' (the exact estimate) or r rows per block")
    p.add_argument("--out", default="runs/bench_attend.jsonl", help="default runs/bench_attend.jsonl (git-ignored)")
    args = p.parse_args(argv)
    from sale._cli import benchmark_preflight
    if benchmark_preflight("python -m profiler bench-attend", args.out):
        return 2
    if args.calibrate_theta is not None and not args.calibrate_theta > 0:
        p.error(f"--calibrate-theta must be > 0, got {args.calibrate_theta}")
    if args.calibrate_len is not None and args.calibrate_len < 1:
        p.error(f"--calibrate-len must be >= 1, got {args.calibrate_len}")
    cfg = sale.SaleConfig(backend="triton", check_finite=False, block_q=args.block_q)
    run_id = uuid.uuid4().hex[:12]
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    common = lambda n: {"run_id": run_id, "git_commit": git_commit(), "gpu": torch.cuda.get_device_name(),
                        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(), "seq_len": n, "batch": 1,
                        "block_q": args.block_q,
                        "num_q_heads": args.q_heads, "num_kv_heads": args.kv_heads, "head_dim": args.head_dim,
                        "dtype": "bfloat16"}

    def emit(rec):
        append_line(args.out, json.dumps({"schema": "sale-bench-attend/1", **rec}))

    for n in args.lengths:
        q = k = v = None
        try:
            q, k, v = make_qkv("structured", 1, args.q_heads, args.kv_heads, n, args.head_dim, torch.bfloat16,
                               "cuda", seed=n)
            dense, fastest_name, fastest, ref_out = dense_medians(q, k, v, with_output=True)
            cudnn = dense.get("sdpa_cudnn")
            print(f"N={n}: dense " + "  ".join(f"{b}={t if t is None else round(t, 2)}" for b, t in dense.items()), flush=True)
            for source, density in ((s, d) for s in args.mask_source for d in args.densities):
                tau = None
                if source == "random":
                    mask = mask_at_density(density, 1, args.q_heads, n, cfg, seed=int(density * 1000))
                else:
                    mask, tau = structured_mask_at_density(q, k, density, cfg)
                kept = mask_to_kept(mask)
                real_density = float(sale.density(mask, n, cfg).mean())
                tiles = time_tiles(q, k, v, mask, kept, cfg, args.tiles)
                base = cudnn if cudnn is not None else fastest
                rec = {"kind": "sparse_at_density", **common(n), "mask_source": source, "threshold": tau,
                       "target_density": density, "full_pair_share": full_pair_share(kept, cfg),
                       "density": real_density, "tiles_ms": tiles, "dense_ms": dense, "cudnn_ms": cudnn,
                       "gpu_context": nvml_snapshot(), "software": software_versions()}
                for prefix, int8 in (("", False), ("int8_", True)):   # the exact and the int8-QK forms apart
                    timed = [(t, name) for name, t in tiles.items() if t is not None and name.endswith(":int8") == int8]
                    if timed:
                        best = min(timed)
                        rec.update({f"{prefix}sparse_ms": best[0], f"{prefix}best_tile": best[1],
                                    f"{prefix}efficiency": real_density * base / best[0]})
                if "int8_sparse_ms" in rec:
                    rec.update(int8_error(q, k, v, mask, kept, cfg))
                emit(rec)
                line = "".join(f"  {p or 'exact '}{rec[p + 'sparse_ms']:8.2f} ms [{rec[p + 'best_tile']}] efficiency vs cuDNN "
                               f"{rec[p + 'efficiency']:.3f}" for p in ("", "int8_") if p + "sparse_ms" in rec)
                if "int8_rel_err" in rec:
                    line += f"  rel.err int8 {rec['int8_rel_err']:.2e} / exact {rec['exact_rel_err']:.2e}"
                print(f"  {source:10s} density {real_density:5.3f} (in full pairs {rec['full_pair_share']:.2f}):{line}   tiles "
                      + " ".join(f"{t}={'-' if x is None else round(x, 2)}" for t, x in tiles.items()), flush=True)
                mask = kept = None  # free before the next density
            for tau, qk in ((t, f) for t in args.thresholds for f in args.qk):
                taus = torch.full((args.q_heads,), tau, device="cuda")
                rec = {"kind": "sale_end_to_end", **common(n), "workload": "structured", "threshold": tau,
                       "int8_qk": qk == "int8",
                       **sale_point(q, k, v, taus, cfg.replace(int8_qk=qk == "int8"), dense, fastest_name, fastest, ref_out)}
                emit(rec)
                print(f"  SALE tau={tau} qk={qk}: {point_line(rec)}", flush=True)
            if args.calibrate_theta is not None:
                for rows, qk in ((r, f) for r in args.estimate_rows for f in args.qk):
                    ecfg = cfg.replace(estimate_rows=rows, int8_qk=qk == "int8")
                    t0 = time.perf_counter()
                    try:
                        heads = calibrated_thresholds(args, ecfg, q, k, v)
                    except (RuntimeError, ValueError) as exc:  # record why, go on with the next option
                        emit({"kind": "error", **common(n), "estimate_rows": rows, "error": f"calibration: {exc}"[:300]})
                        print(f"  calibration (estimate_rows={rows or 'all'}) failed: {str(exc).splitlines()[0][:120]}")
                        continue
                    cal_s = time.perf_counter() - t0
                    taus = torch.tensor([h.threshold for h in heads], device="cuda")
                    rec = {"kind": "sale_end_to_end_calibrated", **common(n), "workload": "structured",
                           "estimate_rows": rows, "int8_qk": qk == "int8", "theta": args.calibrate_theta, "calibrate_method": args.calibrate_method,
                           "calibrate_len": args.calibrate_len or n, "calibrate_s": cal_s,
                           "thresholds": [h.threshold for h in heads],
                           "calibrate_error_per_token": [h.error_per_token for h in heads],
                           "target_speedup": 3.36, **sale_point(q, k, v, taus, ecfg, dense, fastest_name, fastest, ref_out)}
                    emit(rec)
                    print(f"  SALE calibrated (theta {args.calibrate_theta}, estimate_rows={rows or 'all'}, qk={qk}, taus "
                          f"{min(rec['thresholds']):.4g}..{max(rec['thresholds']):.4g}, {cal_s:.0f} s): {point_line(rec)}",
                          flush=True)
        except torch.OutOfMemoryError as exc:
            emit({"kind": "error", "seq_len": n, "error": f"OOM: {exc}"[:300]})
            print(f"N={n}: OOM")
        q = k = v = None  # free the inputs before the next length
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
