"""GPU timing with CUDA events: warm-up first, then repetitions until a time budget, median and spread."""
from __future__ import annotations

import statistics
import time

import torch


# GPU clock cycles of the spin queued before each timed call (about 1 ms at H100 clocks)
LEAD_CYCLES = 2_000_000


def time_cuda(fn, min_reps: int = 5, max_reps: int = 100, budget_s: float = 1.0, warmup: int = 2,
              lead: bool = True) -> dict:
    """Run fn() `warmup` times, then time repetitions with CUDA events until `budget_s` seconds or
    `max_reps` (at least `min_reps`). Returns {"median_ms", "min_ms", "max_ms", "reps"}.

    lead: each timed call is queued behind a GPU spin of LEAD_CYCLES cycles (``torch.cuda._sleep``), so the
    host's work for fn (argument checks, descriptors, launches: 0.1-0.3 ms for a SALE stage) runs while the GPU
    is busy and the events time the GPU's work alone, as when a model keeps the GPU's queue full. Without it
    the events also time the host's launch work on an idle GPU (the project's timings before 2026-11-23)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    start_wall = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start_wall < budget_s):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if lead:
            torch.cuda._sleep(LEAD_CYCLES)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "reps": len(times)}
