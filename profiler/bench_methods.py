"""SALE against the other ways to choose blocks, on the same computation pass.

    python -m profiler bench-methods [--lengths 16384 65536] [--methods sale pooled ...] [--out runs/x.jsonl]
    python -m profiler bench-methods --from-capture runs/captures/smollm2_held_out_N8192.safetensors
        [--thresholds traces/thresholds_smollm2_theta0.4_bisection_8k.json]

For each length (structured workload, or each layer of a Q/K/V capture from `python -m sale capture`), each
method and each value of its knob: selection ms, attend ms (the project's computation pass on the method's
mask), density, speedup of selection + attend over the fastest dense attention measured in the same run, and
the output's error against dense (relative L1 and L2) and attention-mass recall. Methods: `sale` (threshold
tau), `sale_rows16` (`SaleConfig(estimate_rows=16)`), and those of `sale.methods` (pooled, vertical_slash,
xattention, flexprefill). Records: JSONL, schema `sale-bench-methods/1`. On a GPU the triton backend runs; on the
CPU the reference (small N only).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import uuid

import torch

import sale
from sale._cli import check_out_path, default_out, positive_int
from sale._io import append_line
from sale.methods import method_selector

from .baselines import dense_baselines, measure
from .gpu_context import git_commit, nvml_snapshot, software_versions

SCHEMA = "sale-bench-methods/1"
KNOBS = {   # the knob grid of each method (its knob's name, values)
    "sale": ("tau", [0.003, 0.01, 0.03, 0.1]),
    "sale_rows16": ("tau", [0.003, 0.01, 0.03, 0.1]),
    "pooled": ("mass", [0.8, 0.9, 0.95, 0.99]),
    "vertical_slash": ("top_k", [64, 256, 1024, 4096]),
    "xattention": ("mass", [0.8, 0.9, 0.95, 0.99]),
    "flexprefill": ("gamma", [0.8, 0.9, 0.95, 0.99]),
}


def relative_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm().clamp(min=1e-30))


def bench_inputs(q, k, v, methods, knobs, device, reps, base, out_path, calibrated=None) -> list[dict]:
    """Every (method, knob) point on one input: records appended to out_path as they finish. calibrated: per-head
    thresholds (float32 [Hq]) of this input's layer from a thresholds file: one more point, method
    "sale_calibrated" (its knob: their mean)."""
    config = sale.SaleConfig(backend="triton" if q.is_cuda else "reference", check_finite=False)
    timings, errors, dense_out = dense_baselines(q, k, v, reps=reps)
    if not timings:
        raise RuntimeError(f"no dense baseline runs here: {errors}")
    fastest = min(timings, key=lambda b: timings[b]["median_ms"])
    dense_ms = timings[fastest]["median_ms"]
    points = [(method, KNOBS[method][0], knob, method_selector(method, config))
              for method in methods for knob in knobs.get(method, KNOBS[method][1])]
    if calibrated is not None:
        taus = calibrated.to(q.device)
        points.append(("sale_calibrated", "tau (mean of the calibrated per-head thresholds)", float(taus.mean()),
                       lambda q_, k_, _knob: sale.select_blocks(q_, k_, taus, config)))
    records = []
    for method, knob_name, knob, choose in points:
        rec = dict(base, method=method, knob=float(knob), knob_name=knob_name, dense_ms=dense_ms,
                   dense_backend=fastest, time=datetime.datetime.now(datetime.timezone.utc).isoformat())
        try:
            mask = choose(q, k, knob)
            select = measure(lambda: choose(q, k, knob), device, reps=reps)
            attend = measure(lambda: sale.block_sparse_attention(q, k, v, mask, config), device, reps=reps)
            out = sale.block_sparse_attention(q, k, v, mask, config)
            recall, _ = sale.attention_recall(q, k, mask, config.replace(backend="reference"))
            total = select["median_ms"] + attend["median_ms"]
            rec |= {"select_ms": select["median_ms"], "attend_ms": attend["median_ms"],
                    "density": float(sale.density(mask, q.shape[2], config).mean()), "speedup": dense_ms / total,
                    "rel_l1": float(sale.relative_l1(out, dense_out).mean()), "rel_l2": relative_l2(out, dense_out),
                    "recall": float(recall.mean()), "error": None}
        except (RuntimeError, ValueError, torch.OutOfMemoryError) as exc:   # recorded, the run goes on
            rec |= {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
            if q.is_cuda:
                torch.cuda.empty_cache()
        rec["gpu_context"] = nvml_snapshot() if q.is_cuda else {}
        append_line(out_path, json.dumps(rec))
        records.append(rec)
        print(f"{base['source']:>28} N={base['seq_len']:>6} {method:>15} {knob_name.split()[0]}={knob:<7.4g} "
              + (rec["error"] if rec["error"] else f"select {rec['select_ms']:8.2f} ms  attend {rec['attend_ms']:8.2f} ms  "
                 f"density {rec['density']:.3f}  speedup {rec['speedup']:.2f}x  rel.L1 {rec['rel_l1']:.4f}  "
                 f"recall {rec['recall']:.4f}"), flush=True)
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m profiler bench-methods", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[16384, 65536])
    p.add_argument("--methods", nargs="+", choices=list(KNOBS), default=list(KNOBS))
    p.add_argument("--knobs", type=float, nargs="+", default=None,
                   help="knob values for every method given (default: each method's own grid)")
    p.add_argument("--from-capture", default=None, help="a Q/K/V capture (python -m sale capture) instead of the "
                   "structured workload: every layer in it")
    p.add_argument("--thresholds", default=None, help="with --from-capture: a thresholds file of the captured model "
                   "(python -m sale calibrate); SALE also runs at each layer's calibrated per-head thresholds "
                   "(method sale_calibrated)")
    p.add_argument("--q-heads", type=positive_int, default=32)
    p.add_argument("--kv-heads", type=positive_int, default=8)
    p.add_argument("--head-dim", type=positive_int, default=128)
    p.add_argument("--reps", type=positive_int, default=3)
    p.add_argument("--device", default=None, help="cuda (default where there is one) or cpu")
    p.add_argument("--out", default=default_out("bench_methods.jsonl"))
    args = p.parse_args(argv)
    from sale._cli import check_device
    try:
        device = check_device(args.device)
        check_out_path(args.out)
        if args.q_heads % args.kv_heads:
            raise ValueError(f"--q-heads ({args.q_heads}) must be a multiple of --kv-heads ({args.kv_heads})")
        thresholds = None
        if args.thresholds:
            if not args.from_capture:
                raise ValueError("--thresholds needs --from-capture (the captured model's layers)")
            from sale.calibrate import read_thresholds_file
            thresholds = read_thresholds_file(args.thresholds)["thresholds"]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    knobs = {m: args.knobs for m in args.methods} if args.knobs else {}
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    base = {"schema": SCHEMA, "run_id": uuid.uuid4().hex[:12], "git_commit": git_commit(),
            "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu", "software": software_versions()}
    inputs = []
    if args.from_capture:
        from safetensors.torch import load_file
        tensors = load_file(args.from_capture)
        for layer in sorted({int(name.split(".")[0][5:]) for name in tensors}):
            q, k, v = (tensors[f"layer{layer}.{x}"].to(device, dtype) for x in "qkv")
            taus = None
            if thresholds is not None:
                if layer >= len(thresholds) or len(thresholds[layer]) != q.shape[1]:
                    print(f"error: {args.thresholds} has no {q.shape[1]} thresholds for layer {layer} of the capture",
                          file=sys.stderr)
                    return 2
                taus = torch.tensor(thresholds[layer], dtype=torch.float32)
            inputs.append((f"{args.from_capture.split('/')[-1]}:layer{layer}", q, k, v, taus))
    else:
        from sale.workloads import make_qkv
        for n in args.lengths:
            inputs.append(("structured", *make_qkv("structured", 1, args.q_heads, args.kv_heads, n, args.head_dim,
                                                    dtype, device, seed=n), None))
    records = []
    for source, q, k, v, taus in inputs:
        try:
            records += bench_inputs(q, k, v, args.methods, knobs, device, args.reps,
                                    {**base, "source": source, "seq_len": q.shape[2]}, args.out, calibrated=taus)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            print(f"{source}: {type(exc).__name__}: {exc}"[:300], file=sys.stderr)
    print(f"records: {args.out}")
    if not records or all(r["error"] for r in records):
        print("error: no point ran", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
