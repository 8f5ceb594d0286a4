"""The GPU and software a measurement ran on, read through NVML (nvidia-ml-py) and the frameworks."""
from __future__ import annotations

import os
import platform
import subprocess


def software_versions() -> dict:
    import torch
    from .timing import LEAD_CYCLES
    # how time_cuda times (since 2026-11-23: the host's launch work hidden behind a GPU spin, not timed)
    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "timing": f"CUDA events, each call queued behind a {LEAD_CYCLES}-cycle GPU spin"}
    try:
        import triton
        out["triton"] = triton.__version__
    except ImportError:
        out["triton"] = None
    return out


def git_commit() -> str | None:
    if os.environ.get("SALE_GIT_COMMIT"):
        return os.environ["SALE_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(__file__)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def nvml_snapshot(index: int = 0) -> dict:
    """Name, driver, clocks and their maxima, power and limit, temperature, throttle reasons, memory.
    {"error": ...} where NVML is not available (no GPU, no driver)."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as exc:  # no driver: still a valid record
        return {"error": f"NVML unavailable: {exc}"}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        mem = pynvml.nvmlDeviceGetMemoryInfo(h)

        def read(fn, *args):
            try:
                return fn(h, *args)
            except pynvml.NVMLError:
                return None
        name = pynvml.nvmlDeviceGetName(h)
        driver = pynvml.nvmlSystemGetDriverVersion()
        return {
            "name": name.decode() if isinstance(name, bytes) else name,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "sm_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
            "sm_clock_max_mhz": read(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
            "mem_clock_max_mhz": read(pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
            "power_w": (read(pynvml.nvmlDeviceGetPowerUsage) or 0) / 1000 or None,
            "power_limit_w": (read(pynvml.nvmlDeviceGetEnforcedPowerLimit) or 0) / 1000 or None,
            "temperature_c": read(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU),
            "throttle_reasons": read(pynvml.nvmlDeviceGetCurrentClocksEventReasons)
            if hasattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons")
            else read(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons),
            "memory_used_mib": mem.used // 2**20,
            "memory_total_mib": mem.total // 2**20,
        }
    finally:
        pynvml.nvmlShutdown()
