"""A sweep spread over a host's GPUs (``python -m profiler sweep --gpus 0,1,...`` or ``--gpus all``): the sweep's
lengths are dealt over one worker process per GPU, longest first, so that the slowest points start first; every
worker appends its points to the same trace file through the locked append (``sale._io.append_line``), under one
run id, each record with its own GPU's NVML context. Progress is printed per GPU. A worker that dies (a crash, an
unrecoverable CUDA error) has each of its unfinished points recorded as failed, with why, and the others go on;
the run's summary record is written once all are done.
"""
from __future__ import annotations

import datetime
import multiprocessing
import queue as queue_mod
import uuid

from . import trace


def parse_gpus(text: str, available: int) -> list[int]:
    """GPU indices from "all" or "0,2,3"; ValueError naming what is allowed."""
    if text == "all":
        if available < 1:
            raise ValueError("--gpus all needs a CUDA GPU: none is visible")
        return list(range(available))
    try:
        indices = [int(x) for x in text.split(",") if x.strip() != ""]
    except ValueError:
        raise ValueError(f"--gpus takes 'all' or comma-separated GPU indices such as 0,1, got {text!r}") from None
    if not indices or len(set(indices)) != len(indices):
        raise ValueError(f"--gpus takes distinct GPU indices such as 0,1, got {text!r}")
    bad = [i for i in indices if not 0 <= i < available]
    if bad:
        raise ValueError(f"--gpus: this machine has {available} CUDA GPUs (indices 0..{available - 1}), got {bad}")
    return indices


def deal(lengths: list[int], workers: int) -> list[list[int]]:
    """Lengths dealt over workers, longest first, each to the worker with the least work so far (work ~ N^2)."""
    loads, shares = [0] * workers, [[] for _ in range(workers)]
    for n in sorted(lengths, reverse=True):
        w = min(range(workers), key=lambda i: (loads[i], i))
        shares[w].append(n)
        loads[w] += n * n
    return shares


def _worker(slot: int, device: str, lengths: list[int], thresholds: list[float], kwargs: dict, run_id: str,
            messages):
    """Worker `slot`: the sweep of its lengths on its device, each finished point reported to the parent."""
    import torch

    from .sweep import sweep
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))

    def report(rec):
        messages.put((slot, rec["seq_len"], rec["threshold"], rec["error"]))
    sweep(lengths, thresholds, device=device, run_id=run_id, summary=False, on_point=report, progress=False, **kwargs)


def _failed_point(base: dict, n: int, tau: float, why: str) -> dict:
    rec = dict(base, kind="point", seq_len=n, threshold=float(tau),
               time=datetime.datetime.now(datetime.timezone.utc).isoformat(), error=why[:300], dense_ms=None,
               dense_backend=None, quantize_ms=None, select_ms=None, attend_ms=None, sale_ms=None, density=None,
               overhead_pct=None, speedup=None, gpu_context={})
    return rec


def sweep_on_devices(devices: list[str], lengths: list[int], thresholds: list[float], *, out_path: str,
                     worker=_worker, **kwargs) -> list[dict]:
    """The sweep of `lengths` x `thresholds` over `devices` (one process each, "cuda:i"; tests pass "cpu"), with
    the keyword arguments of ``sweep.sweep``. Returns every point record of the run and its summary."""
    from .sweep import DTYPES, device_name, write_summary
    from .gpu_context import git_commit
    run_id = uuid.uuid4().hex[:12]
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    shares = deal(lengths, len(devices))
    procs = {}
    for slot, (device, share) in enumerate(zip(devices, shares)):
        if share:
            p = ctx.Process(target=worker, args=(slot, device, share, list(thresholds), {**kwargs, "out_path": out_path},
                                                 run_id, messages))
            p.start()
            procs[slot] = (p, share, device)
            print(f"[{device}] lengths {share}", flush=True)
    done = {slot: set() for slot in procs}
    total = {slot: len(share) * len(thresholds) for slot, (_, share, _) in procs.items()}
    while any(p.is_alive() for p, _, _ in procs.values()) or not messages.empty():
        try:
            slot, n, tau, error = messages.get(timeout=0.5)
        except queue_mod.Empty:
            continue
        done[slot].add((n, float(tau)))
        print(f"[{procs[slot][2]}] {len(done[slot])}/{total[slot]} N={n} tau={tau}" + (f" failed: {error}" if error else ""),
              flush=True)
    base = {"schema": trace.SCHEMA, "run_id": run_id, "git_commit": git_commit(), "backend": kwargs.get("backend", "reference"),
            "workload": kwargs.get("workload", "structured"), "batch": kwargs.get("batch", 1),
            "num_q_heads": kwargs.get("num_q_heads", 8), "num_kv_heads": kwargs.get("num_kv_heads", 2),
            "head_dim": kwargs.get("head_dim", 64),
            "dtype": str(DTYPES[kwargs.get("dtype", "fp32")]).replace("torch.", ""),
            "granularity": kwargs.get("granularity", "per_token"), "estimate_rows": kwargs.get("estimate_rows"),
            "block_q": kwargs.get("block_q", 64)}
    for slot, (p, share, device) in procs.items():
        p.join()
        if p.exitcode:   # every point it did not finish is recorded as failed, with why
            why = f"worker on {device} died (exit code {p.exitcode}) before this point"
            for n in share:
                for tau in thresholds:
                    if (n, float(tau)) not in done[slot]:
                        trace.append(out_path, _failed_point({**base, "gpu": device_name(device)}, n, tau, why))
            print(f"[{device}] died with exit code {p.exitcode}; its unfinished points are recorded as failed",
                  flush=True)
    records, _ = trace.read(out_path)
    points = [r for r in records if r["run_id"] == run_id and r["kind"] == "point"]
    summary = write_summary(out_path, points, {**base, "gpu": ", ".join(sorted({p["gpu"] for p in points}))},
                            lengths, thresholds)
    return points + [summary]
