"""Stage instrumentation from outside the kernels: each stage inside an NVTX range of the "sale"
domain (registered strings, the sequence length as payload) and timed with CUDA events (or the host
clock on the CPU). The kernels know nothing of it; results are the same with it on or off."""
from __future__ import annotations

import contextlib
import functools
import time

import nvtx
import torch

import sale
from sale.pipeline import run_stages

DOMAIN = "sale"
STAGES = ("quantize", "select", "attend")
_COLORS = {"quantize": "blue", "select": "orange", "attend": "green", "point": "grey"}


@functools.lru_cache(maxsize=None)
def _domain():
    return nvtx.get_domain(DOMAIN)


@functools.lru_cache(maxsize=4096)
def _attributes(name: str, payload):
    domain = _domain()
    # A registered string (None when no profiler is attached): nsys capture ranges match it cheaply.
    message = domain.get_registered_string(name) or name
    return domain.get_event_attributes(message=message, color=_COLORS.get(name.split()[0], "purple"),
                                       payload=payload)


@contextlib.contextmanager
def nvtx_range(name: str, payload=None):
    """An NVTX push/pop range named `name` in the "sale" domain."""
    domain = _domain()
    domain.push_range(_attributes(name, payload))
    try:
        yield
    finally:
        domain.pop_range()


class StageTimer:
    """Collects per-stage times (ms) of repeated runs: CUDA events on a GPU, perf_counter on the CPU.

    Use ``with timer.stage("select", seq_len): ...`` around each stage; ``timer.collect()`` waits for
    the GPU once and returns {stage: [ms, ...]}."""

    def __init__(self, device: torch.device, nvtx_ranges: bool = True):
        self.cuda = torch.device(device).type == "cuda"
        self.nvtx_ranges = nvtx_ranges
        self._pending: list[tuple[str, object, object]] = []
        self.times: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def stage(self, name: str, seq_len: int | None = None):
        ranged = nvtx_range(name, seq_len) if self.nvtx_ranges else contextlib.nullcontext()
        with ranged:
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                yield
                end.record()
                self._pending.append((name, start, end))
            else:
                t0 = time.perf_counter()
                yield
                self.times.setdefault(name, []).append(1e3 * (time.perf_counter() - t0))

    def collect(self) -> dict[str, list[float]]:
        if self._pending:
            torch.cuda.synchronize()
            for name, start, end in self._pending:
                self.times.setdefault(name, []).append(start.elapsed_time(end))
            self._pending.clear()
        return self.times


def sale_stages(q, k, v, tau: torch.Tensor, config: sale.SaleConfig, timer: StageTimer | None):
    """SALE's three stages (``sale.pipeline.run_stages``), each timed and NVTX-ranged by `timer` when
    given: (out, mask)."""
    if timer is None:
        return run_stages(q, k, v, tau, config)
    return run_stages(q, k, v, tau, config, stage=lambda name: timer.stage(name, q.shape[2]))
