"""Argument checks shared by the command lines (``python -m sale``, ``python -m profiler``): each bad value is
refused before any work, with one line naming the argument and what it takes."""
from __future__ import annotations

import argparse
import math
import os

NEEDS_GPU = "needs a CUDA GPU (or TRITON_INTERPRET=1 for the triton backend)"
RUNS = "runs"   # where command-line outputs go unless --out says otherwise (git-ignored)


def default_out(name: str) -> str:
    """runs/<name>: the default output path of a command (never the committed traces/)."""
    return os.path.join(RUNS, name)


def threshold(text: str) -> float:
    """argparse type of a threshold tau: a finite float >= 0 (0 keeps every causal block)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a threshold >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"takes finite thresholds >= 0 (0 makes a head dense), got {text!r}")
    return value


def _number(text: str, cast, low, inclusive: bool, what: str):
    """argparse type body: `text` as `cast`, finite and above `low` (or at it, with `inclusive`)."""
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes {what}, got {text!r}") from None
    if not math.isfinite(value) or value < low or (value == low and not inclusive):
        raise argparse.ArgumentTypeError(f"takes {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, True, "an integer >= 1")


def nonnegative_int(text: str) -> int:
    return _number(text, int, 0, True, "an integer >= 0")


def positive_float(text: str) -> float:
    return _number(text, float, 0.0, False, "a finite number > 0")


def check_device(device: str | None, backend: str | None = None) -> str:
    """The device to run on ('cuda' if one is there and none was asked for, else 'cpu'); ValueError for a device
    torch does not know, or a GPU device without a GPU."""
    import torch
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device takes cpu or cuda[:index], got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device takes cpu or cuda[:index], got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} {NEEDS_GPU}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    if backend == "triton" and dev.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise ValueError(f"--backend triton {NEEDS_GPU}")
    return str(dev)


def require_gpu(command: str) -> None:
    """ValueError unless a CUDA GPU is there (benchmarks time GPU kernels)."""
    import torch
    if not torch.cuda.is_available():
        raise ValueError(f"{command} {NEEDS_GPU.split(' (')[0]}: no CUDA device is visible")


def benchmark_preflight(command: str, out: str) -> int:
    """0 if a GPU benchmark can start (a CUDA GPU, a writable --out), else 2 after one line on stderr."""
    import sys
    try:
        require_gpu(command)
        check_out_path(out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def check_out_path(path: str, arg: str = "--out") -> str:
    """Refuse an output path that cannot be written before any work is done: empty, a folder, or in a folder that
    cannot be created or written."""
    if not path or not path.strip():
        raise ValueError(f"{arg} must name a file, got an empty path")
    if os.path.isdir(path):
        raise ValueError(f"{arg} must name a file, got the folder {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{arg} {path!r}: cannot create its folder ({exc.strerror})") from None
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{arg} {path!r}: the file is not writable")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{arg} {path!r}: its folder {folder!r} is not writable")
    return path
