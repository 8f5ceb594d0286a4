"""Dense attention baselines measured in the same run as SALE: every SDPA backend that runs, the
project's Triton dense attention on a GPU, and the float32 reference on the CPU."""
from __future__ import annotations

import statistics
import time
import warnings

import torch

import sale

from .timing import time_cuda

SDPA_ON_GPU = ("cudnn", "flash", "efficient")


def measure(fn, device, reps: int = 5, warmup: int = 1, budget_s: float = 1.0) -> dict:
    """Median/min/max ms of fn(): CUDA events on a GPU, the host clock on the CPU."""
    if torch.device(device).type == "cuda":
        return time_cuda(fn, min_reps=reps, budget_s=budget_s, warmup=warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": reps}


def _dense_fns(q, k, v):
    """name -> zero-argument callable computing causal dense attention of (q, k, v)."""
    fns = {}
    if q.device.type == "cuda":
        group = q.shape[1] // k.shape[1]
        repeated = {}

        def sdpa(name):
            def run():
                try:
                    return sale.sdpa_attention(q, k, v, name)
                except RuntimeError:
                    if group == 1:
                        raise
                    # backends without GQA support get K and V repeated once, outside later timings
                    if "kv" not in repeated:
                        repeated["kv"] = (k.repeat_interleave(group, 1), v.repeat_interleave(group, 1))
                    return sale.sdpa_attention(q, *repeated["kv"], name)
            return run
        for name in SDPA_ON_GPU:
            fns[f"sdpa_{name}"] = sdpa(name)
        if q.dtype in (torch.float16, torch.bfloat16) and q.shape[3] in (64, 128, 256):
            from sale.triton.attend_kernel import attend_triton, dense_kept
            cfg = sale.SaleConfig(backend="triton", check_finite=False)
            kept = dense_kept(q.shape[0], q.shape[1], q.shape[2], cfg, q.device)
            fns["triton_dense"] = lambda: attend_triton(q, k, v, None, cfg, kept=kept)
    else:
        fns["reference"] = lambda: sale.dense_attention(q, k, v)
        fns["sdpa_math"] = lambda: sale.sdpa_attention(q, k, v, "math")
    return fns


def dense_baselines(q, k, v, reps: int = 5, budget_s: float = 1.0,
                    with_output: bool = True) -> tuple[dict, dict, torch.Tensor | None]:
    """Time every dense baseline that runs. Returns (timings {name: {median_ms, ...}}, errors
    {name: reason}, output of the fastest, or None without `with_output`)."""
    timings, errors = {}, {}
    fns = _dense_fns(q, k, v)
    for name, fn in fns.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                timings[name] = measure(fn, q.device, reps=reps, budget_s=budget_s)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            errors[name] = str(exc).splitlines()[0][:200]
        if q.device.type == "cuda":
            torch.cuda.empty_cache()
    if not timings or not with_output:
        return timings, errors, None
    fastest = min(timings, key=lambda n: timings[n]["median_ms"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fns[fastest]()
    return timings, errors, out


def dense_medians(q, k, v, budget_s: float = 2.0, with_output: bool = False):
    """({baseline: median ms, or None where it cannot run}, fastest baseline, its ms, its output or
    None), printing why a baseline did not run."""
    timings, errors, out = dense_baselines(q, k, v, reps=3, budget_s=budget_s, with_output=with_output)
    for name, why in errors.items():
        print(f"  {name}: not run ({why[:100]})")
    if not timings:
        raise RuntimeError(f"no dense baseline runs here: {errors}")
    fastest = min(timings, key=lambda b: timings[b]["median_ms"])
    medians = {b: (timings[b]["median_ms"] if b in timings else None) for b in [*timings, *errors]}
    return medians, fastest, timings[fastest]["median_ms"], out
