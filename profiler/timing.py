"""GPU timing with CUDA events: warm-up first, then repetitions until a time budget, median and spread."""
from __future__ import annotations

import statistics
import time

import torch


def time_cuda(fn, min_reps: int = 5, max_reps: int = 100, budget_s: float = 1.0, warmup: int = 2) -> dict:
    """Run fn() `warmup` times, then time repetitions with CUDA events until `budget_s` seconds or
    `max_reps` (at least `min_reps`). Returns {"median_ms", "min_ms", "max_ms", "reps"}."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    start_wall = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start_wall < budget_s):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": len(times)}
