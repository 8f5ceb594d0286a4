"""`python -m profiler sweep`: SALE's stages against the fastest dense attention over sequence
lengths x thresholds (x heads, head dim, dtype, batch, granularity, workload), one trace record a point.

Each point: warm-up, then repetitions of the instrumented pipeline (each stage in an NVTX range and
timed with CUDA events; the host clock on the CPU), median and spread per stage; every dense baseline
that runs, measured in the same run for the same inputs; density; accuracy against dense where it fits
(output error, cosine, attention-mass recall); overhead % and speedup; the instrumentation's own
overhead (instrumented vs plain pipeline). After all points, one summary record per threshold with
the break-even length (where SALE starts beating the fastest dense attention). Failed points (OOM,
bad configuration) are recorded with their reason and the sweep goes on.
"""
from __future__ import annotations

import datetime
import math
import platform
import statistics
import uuid

import torch
from tqdm.auto import tqdm

import sale
from sale.workloads import make_qkv

from . import trace
from .baselines import dense_baselines, measure
from .gpu_context import git_commit, nvml_snapshot, software_versions
from .stages import STAGES, StageTimer, nvtx_range, sale_stages

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def device_name(device) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()})"


def run_point(q, k, v, tau_value, config, reps, warmup, dense, fastest_name, dense_out, exact_ref, accuracy):
    tau = torch.full((q.shape[1],), float(tau_value), device=q.device)
    timer = StageTimer(q.device)
    for _ in range(warmup):
        sale_stages(q, k, v, tau, config, None)
    for _ in range(reps):
        with nvtx_range(f"point N={q.shape[2]} tau={tau_value}", q.shape[2]):
            out, mask = sale_stages(q, k, v, tau, config, timer)
    times = timer.collect()
    stats = {s: _summary(times[s]) for s in STAGES}
    # The same pipeline with no NVTX ranges and no per-stage events, in the same run.
    plain = measure(lambda: sale_stages(q, k, v, tau, config, None), q.device, reps=reps, warmup=0)
    instrumented = measure(lambda: sale_stages(q, k, v, tau, config, StageTimer(q.device)), q.device, reps=reps,
                           warmup=0)
    sale_ms = sum(stats[s]["median_ms"] for s in STAGES)
    fastest_ms = dense[fastest_name]["median_ms"] if fastest_name else None
    rec = {f"{s}_ms": stats[s]["median_ms"] for s in STAGES}
    rec |= {f"{s}_spread_ms": [stats[s]["min_ms"], stats[s]["max_ms"]] for s in STAGES}
    rec |= {
        "sale_ms": sale_ms, "sale_plain_ms": plain["median_ms"],
        "instrumentation_overhead_pct": 100 * (instrumented["median_ms"] - plain["median_ms"]) / plain["median_ms"],
        "reps": reps,
        "density": float(sale.density(mask, q.shape[2], config).mean()),
        "candidate_density": _finite(float(sale.candidate_density(mask, q.shape[2], config).mean())),
        "density_per_head": [round(float(x), 5) for x in sale.density(mask, q.shape[2], config)[0]],
        "overhead_pct": 100 * (rec["quantize_ms"] + rec["select_ms"]) / fastest_ms if fastest_ms else None,
        "speedup": fastest_ms / sale_ms if fastest_ms else None,
    }
    rec |= {"rel_l1": None, "cosine": None, "l1_per_token": None, "recall_mean": None, "recall_min": None,
            "accuracy_reference": None}
    if accuracy:
        ref = exact_ref if exact_ref is not None else dense_out
        if ref is not None:
            rec["rel_l1"] = float(sale.relative_l1(out, ref).mean())
            rec["cosine"] = float(sale.cosine_similarity(out, ref).mean())
            rec["l1_per_token"] = float(sale.l1_error_per_token(out, ref).mean())
            rec["accuracy_reference"] = "float32 reference" if exact_ref is not None else "fastest dense kernel"
        if exact_ref is not None:
            mean, minimum = sale.attention_recall(q, k, mask, config.replace(backend="reference"))
            rec["recall_mean"], rec["recall_min"] = float(mean.mean()), float(minimum.min())
    return rec


def _summary(xs):
    return {"median_ms": statistics.median(xs), "min_ms": min(xs), "max_ms": max(xs)}


def _finite(x):
    return x if x is not None and math.isfinite(x) else None


def break_even(points: list[dict]) -> dict:
    """Per threshold: the shortest length at which SALE beats the fastest dense attention, log-linearly
    interpolated between the measured lengths (None if never; the first length if always)."""
    out = {}
    for tau in sorted({p["threshold"] for p in points}):
        pts = sorted((p["seq_len"], p["speedup"]) for p in points
                     if p["threshold"] == tau and p.get("speedup") is not None)
        value = None
        for (n0, s0), (n1, s1) in zip(pts, pts[1:]):
            if s0 < 1 <= s1:
                f = (1 - s0) / (s1 - s0)
                value = round(math.exp(math.log(n0) + f * (math.log(n1) - math.log(n0))))
                break
        if value is None and pts and pts[0][1] >= 1:
            value = pts[0][0]
        out[str(tau)] = value
    return out


def sweep(lengths, thresholds, *, backend="reference", device="cpu", workload="structured", batch=1,
          num_q_heads=8, num_kv_heads=2, head_dim=64, dtype="fp32", granularity="per_token", estimate_rows=None, block_q=64,
          reps=3, warmup=1,
          accuracy_max_len=4096, out_path="runs/sweep.jsonl", seed=0, progress=True, run_id=None, summary=True,
          on_point=None) -> list[dict]:
    """Run the sweep and append one validated record per point to `out_path`. Returns the records.
    run_id: the run's id (default: a new one; the workers of a sweep over several GPUs share one); summary: also
    append the run's summary record (break-even lengths); on_point(record): called after each point."""
    config = sale.SaleConfig(backend=backend, granularity=granularity, estimate_rows=estimate_rows, block_q=block_q,
                             check_finite=False)
    run_id = run_id or uuid.uuid4().hex[:12]
    nvml_index = torch.device(device).index or 0 if torch.device(device).type == "cuda" else 0
    base = {"schema": trace.SCHEMA, "kind": "point", "run_id": run_id, "git_commit": git_commit(),
            "gpu": device_name(device), "backend": backend, "workload": workload, "batch": batch,
            "num_q_heads": num_q_heads, "num_kv_heads": num_kv_heads, "head_dim": head_dim,
            "dtype": str(DTYPES[dtype]).replace("torch.", ""), "granularity": granularity, "estimate_rows": estimate_rows,
            "block_q": block_q}
    records = []
    bar = tqdm(total=len(lengths) * len(thresholds), desc="sale sweep", disable=not progress, unit="point")
    for n in lengths:
        q = k = v = None
        dense, dense_errors, dense_out, fastest, exact_ref = {}, {}, None, None, None
        context_before = nvml_snapshot(nvml_index)
        try:
            q, k, v = make_qkv(workload, batch, num_q_heads, num_kv_heads, n, head_dim, DTYPES[dtype], device, seed=seed + n)
            with nvtx_range(f"dense N={n}", n):
                dense, dense_errors, dense_out = dense_baselines(q, k, v, reps=reps)
            fastest = min(dense, key=lambda b: dense[b]["median_ms"]) if dense else None
            if n <= accuracy_max_len:
                exact_ref = sale.dense_attention(q, k, v)
            setup_error = None
        except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
            setup_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        for tau in thresholds:
            bar.set_postfix_str(f"N={n} tau={tau}")
            rec = dict(base, seq_len=n, threshold=float(tau), time=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                       error=None, dense_ms=dense[fastest]["median_ms"] if fastest else None, dense_backend=fastest,
                       dense_all_ms={b: t["median_ms"] for b, t in dense.items()},
                       dense_spread_ms={b: [t["min_ms"], t["max_ms"]] for b, t in dense.items()},
                       dense_errors=dense_errors)
            empty = {f"{s}_ms": None for s in STAGES} | {"sale_ms": None, "density": None, "overhead_pct": None,
                                                        "speedup": None}
            try:
                if setup_error:
                    raise RuntimeError(setup_error)
                rec |= run_point(q, k, v, tau, config, reps, warmup, dense, fastest, dense_out, exact_ref,
                                 accuracy=True)
            except Exception as exc:  # noqa: BLE001 - OOM, bad configuration: record why, go on
                rec |= empty | {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
                if torch.device(device).type == "cuda":
                    torch.cuda.empty_cache()
            rec["gpu_context"] = {"before": context_before, "after": nvml_snapshot(nvml_index),
                                  "software": software_versions()}
            trace.append(out_path, rec)
            records.append(rec)
            bar.update(1)
            if on_point is not None:
                on_point(rec)
        q = k = v = dense_out = exact_ref = None  # free before the next length
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    bar.close()
    if not summary:
        return records
    return records + [write_summary(out_path, records, base, lengths, thresholds)]


def write_summary(out_path, records, base, lengths, thresholds) -> dict:
    """Append the summary record of a run's points (break-even length per threshold, failed points)."""
    ok = [r for r in records if r["error"] is None]
    run_id = base["run_id"]
    summary = {"schema": trace.SCHEMA, "kind": "summary", "run_id": run_id, "break_even": break_even(ok),
               "time": datetime.datetime.now(datetime.timezone.utc).isoformat(), **{k: base[k] for k in (
                   "gpu", "backend", "workload", "batch", "num_q_heads", "num_kv_heads", "head_dim", "dtype", "granularity",
                   "estimate_rows", "block_q")},
               "lengths": list(lengths), "thresholds": [float(t) for t in thresholds],
               "failed_points": len(records) - len(ok)}
    trace.append(out_path, summary)
    return summary
