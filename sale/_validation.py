"""Input checks shared by the public functions: each error names the argument and what was expected."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .config import SaleConfig

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# float64 is accepted by the reference backend only, so tests can run the math in double precision.
REFERENCE_ONLY_DTYPES = (torch.float64,)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128, 256)
TRITON_DTYPES = (torch.float16, torch.bfloat16)
TRITON_HEAD_DIMS = (64, 128, 256)


def check_config(config) -> SaleConfig:
    if config is None:
        return SaleConfig()
    if not isinstance(config, SaleConfig):
        raise TypeError(f"config must be a SaleConfig or None, got {type(config).__name__}")
    return config


def _check_tensor(name: str, x, config: SaleConfig) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape [B, H, N, D] (4 dims), got shape {tuple(x.shape)}")
    allowed = SUPPORTED_DTYPES + (REFERENCE_ONLY_DTYPES if config.backend == "reference" else ())
    if config.backend == "triton":
        allowed = TRITON_DTYPES
    if x.dtype not in allowed:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in allowed]} for backend "
                        f"{config.backend!r}, got {x.dtype}")
    if x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{name} must have B, H, N >= 1, got shape {tuple(x.shape)}")
    dims = TRITON_HEAD_DIMS if config.backend == "triton" else SUPPORTED_HEAD_DIMS
    if x.shape[3] not in dims:
        raise ValueError(f"{name} head dim D must be one of {dims} for backend {config.backend!r}, got {x.shape[3]}")
    if config.backend == "triton" and x.device.type != "cuda" and not _triton_interpreting():
        raise ValueError(f"{name} must be on a CUDA device for backend 'triton' "
                         f"(or run with TRITON_INTERPRET=1), got device {x.device}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (shapes only, no values): SALE needs real tensors")


def _check_values(name: str, x, config: SaleConfig) -> None:
    if config.check_finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or Inf values")


def _triton_interpreting() -> bool:
    import os
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_qkv(q, k, v, config: SaleConfig) -> None:
    """q [B, Hq, N, D], k and v [B, Hkv, N, D] (v may be None), same dtype and device, Hq % Hkv == 0."""
    _check_tensor("q", q, config)
    _check_tensor("k", k, config)
    others = [("k", k)] + ([("v", v)] if v is not None else [])
    if v is not None:
        _check_tensor("v", v, config)
    for name, x in others:
        if x.device != q.device:
            raise ValueError(f"{name} must be on the same device as q ({q.device}), got {x.device}")
        if x.dtype != q.dtype:
            raise TypeError(f"{name} must have the same dtype as q ({q.dtype}), got {x.dtype}")
        if x.shape[0] != q.shape[0] or x.shape[2] != q.shape[2] or x.shape[3] != q.shape[3]:
            raise ValueError(f"{name} must have shape [B={q.shape[0]}, Hkv, N={q.shape[2]}, D={q.shape[3]}] "
                             f"to match q {tuple(q.shape)}, got {tuple(x.shape)}")
    if v is not None and v.shape != k.shape:
        raise ValueError(f"v must have the same shape as k {tuple(k.shape)}, got {tuple(v.shape)}")
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"the number of query heads (q.shape[1]={q.shape[1]}) must be a multiple of "
                         f"the number of kv heads (k.shape[1]={k.shape[1]})")
    # values last: a tensor on another device is named before anything reads it
    for name, x in [("q", q)] + others:
        _check_values(name, x, config)


def thresholds_tensor(thresholds, num_q_heads: int, device) -> torch.Tensor:
    """One float32 threshold per query head, shape [Hq], from a float, a sequence or a tensor."""
    if isinstance(thresholds, bool):
        raise TypeError("thresholds must be a float, a sequence of floats or a tensor, got bool")
    if isinstance(thresholds, (int, float)):
        values = [float(thresholds)] * num_q_heads
    elif isinstance(thresholds, torch.Tensor):
        if thresholds.dim() == 0:
            values = [float(thresholds)] * num_q_heads
        elif thresholds.dim() == 1:
            values = [float(x) for x in thresholds.detach().cpu().tolist()]
        else:
            raise ValueError(f"thresholds tensor must be 0-d or 1-d [Hq], got shape {tuple(thresholds.shape)}")
    elif isinstance(thresholds, Sequence) and not isinstance(thresholds, (str, bytes)):
        values = []
        for x in thresholds:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise TypeError(f"thresholds must hold floats, got an element of type {type(x).__name__}")
            values.append(float(x))
    else:
        raise TypeError(f"thresholds must be a float, a sequence of floats or a tensor, got {type(thresholds).__name__}")
    if len(values) != num_q_heads:
        raise ValueError(f"thresholds must hold one value per query head ({num_q_heads}), got {len(values)}")
    for h, x in enumerate(values):
        if math.isnan(x) or x < 0:
            raise ValueError(f"thresholds must be >= 0 and not NaN, got {x} for head {h}")
    return torch.tensor(values, dtype=torch.float32, device=device)


def check_mask(mask, batch: int, num_q_heads: int, seq_len: int, config: SaleConfig, device) -> None:
    from .blocks import num_blocks
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor of dtype torch.bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool, got {mask.dtype}")
    want = (batch, num_q_heads, num_blocks(seq_len, config.block_q), num_blocks(seq_len, config.block_k))
    if tuple(mask.shape) != want:
        raise ValueError(f"mask must have shape [B, Hq, ceil(N/block_q), ceil(N/block_k)] = {list(want)}, "
                         f"got {list(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"mask must be on the same device as q ({device}), got {mask.device}")
