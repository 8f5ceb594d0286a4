"""One sweep point under torch.profiler: a Chrome trace (opens in Perfetto) and the per-stage breakdown
derived from its device-kernel events, each stage inside a ``sale::<stage>`` record_function range.

    python -m profiler capture-torch --seq-len 32768 --threshold 0.01 [--out runs/torch_profile]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import sale
from sale.workloads import make_qkv

from .stages import STAGES, sale_stages


class _RecordFunctionTimer:
    """Adapter giving sale_stages record_function ranges instead of CUDA events."""

    @contextlib.contextmanager
    def stage(self, name, seq_len=None):
        with record_function(f"sale::{name}"):
            yield


def _kernel_events(prof):
    return [e for e in prof.events()
            if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith("sale::")]


def stage_breakdown(prof) -> dict:
    """{stage: {"device_ms", "kernels", "cpu_ms"}} from the profile: each device kernel is attributed
    to the sale:: range of the CPU op that launched it (torch links them through correlation ids)."""
    out = {}
    for evt in prof.events():
        # each range also appears as a GPU-side annotation; the CPU-side event holds its kernels' time
        if not evt.name.startswith("sale::") or evt.device_type != torch.autograd.DeviceType.CPU:
            continue
        stage = evt.name.split("::", 1)[1]
        device_us = getattr(evt, "device_time_total", None)
        if device_us is None:
            device_us = getattr(evt, "cuda_time_total", 0.0)
        entry = out.setdefault(stage, {"device_ms": 0.0, "cpu_ms": 0.0, "calls": 0})
        entry["device_ms"] += device_us / 1e3
        entry["cpu_ms"] += evt.cpu_time_total / 1e3
        entry["calls"] += 1
    return out


def capture(seq_len=4096, threshold=0.01, num_q_heads=32, num_kv_heads=8, head_dim=128, reps=3,
            out_dir="runs/torch_profile", device=None):
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    backend = "triton" if device == "cuda" else "reference"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = sale.SaleConfig(backend=backend, check_finite=False)
    q, k, v = make_qkv("structured", 1, num_q_heads, num_kv_heads, seq_len, head_dim, dtype, device, seed=seq_len)
    tau = torch.full((num_q_heads,), threshold, device=device)
    sale_stages(q, k, v, tau, config, None)  # warm-up: compile the kernels outside the capture
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(reps):
            sale_stages(q, k, v, tau, config, _RecordFunctionTimer())
        if device == "cuda":
            torch.cuda.synchronize()
    os.makedirs(out_dir, exist_ok=True)
    trace_path = os.path.join(out_dir, f"sale_N{seq_len}_tau{threshold}.json")
    prof.export_chrome_trace(trace_path)
    breakdown = stage_breakdown(prof)
    kernels = {}
    for e in _kernel_events(prof):
        kernels.setdefault(e.name, [0, 0.0])
        kernels[e.name][0] += 1
        kernels[e.name][1] += e.device_time_total / 1e3 if hasattr(e, "device_time_total") else 0.0
    summary = {"seq_len": seq_len, "threshold": threshold, "device": device, "reps": reps,
               "stages": breakdown, "kernels": {n: {"calls": c, "device_ms": t} for n, (c, t) in kernels.items()},
               "chrome_trace": trace_path}
    with open(os.path.join(out_dir, f"breakdown_N{seq_len}_tau{threshold}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m profiler capture-torch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--threshold", type=float, default=0.01)
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="runs/torch_profile")
    a = p.parse_args(argv)
    s = capture(a.seq_len, a.threshold, a.q_heads, a.kv_heads, a.head_dim, a.reps, a.out, a.device)
    for stage in STAGES:
        e = s["stages"].get(stage, {})
        print(f"{stage:>9}: device {e.get('device_ms', 0) / a.reps:8.3f} ms/rep   cpu {e.get('cpu_ms', 0) / a.reps:8.3f} ms/rep")
    print(f"chrome trace: {s['chrome_trace']}")


if __name__ == "__main__":
    main()
