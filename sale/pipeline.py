"""SALE end to end: quantize -> select -> attend, with optional statistics."""
from __future__ import annotations

import contextlib
import dataclasses

import torch

from ._validation import check_config, check_qkv, thresholds_tensor
from .attend import _attend
from .config import SaleConfig
from .metrics import density
from .quantize import _quantize


@dataclasses.dataclass
class SaleStats:
    """What ``sale_attention(..., return_stats=True)`` returns beside the output.

    Attributes:
        mask: torch.bool [B, Hq, nqb, nkb], the computed blocks.
        density: float32 [B, Hq], kept causal blocks over causal blocks.
        thresholds: float32 [Hq], the thresholds used.
    """

    mask: torch.Tensor
    density: torch.Tensor
    thresholds: torch.Tensor


def sale_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, thresholds,
                   config: SaleConfig | None = None, return_stats: bool = False):
    """SALE sparse causal attention: 4-bit estimate, block selection, block-sparse attention.

    Args:
        q: [B, Hq, N, D] float16/bfloat16/float32 (float64 with the reference backend;
            float16/bfloat16 and D in {64, 128, 256} with the triton backend).
        k, v: [B, Hkv, N, D], same dtype and device; Hq a multiple of Hkv.
        thresholds: tau per query head: a float, or a sequence / 1-d tensor of Hq floats >= 0.
            0 makes a head dense.
        config: SaleConfig; default SaleConfig().
        return_stats: also return a SaleStats with the mask and the density per head.

    Returns:
        out [B, Hq, N, D] in q's dtype, or (out, SaleStats) with return_stats.
    """
    config = check_config(config)
    check_qkv(q, k, v, config)
    tau = thresholds_tensor(thresholds, q.shape[1], q.device)
    unchecked = config.replace(check_finite=False)  # inputs were checked once above
    out, mask = run_stages(q, k, v, tau, unchecked)
    if not return_stats:
        return out
    return out, SaleStats(mask=mask, density=density(mask, q.shape[2], config), thresholds=tau)


def _no_stage(name: str):
    return contextlib.nullcontext()


def run_stages(q, k, v, tau: torch.Tensor, config: SaleConfig, stage=_no_stage):
    """The three stages on already-checked inputs (tau: float32 [Hq]), each inside ``stage(name)``, a
    context manager the caller may use to time or annotate it (the profiler does, from outside).
    Returns (out, mask). With the triton backend the selection kernel's compact kept lists feed the
    computation pass directly."""
    with stage("quantize"):
        quantized = _quantize(q, k, config)
    with stage("select"):
        if config.backend == "triton":
            from .triton.select_kernel import select_triton
            mask, _, kept = select_triton(q, k, tau, config, quantized, return_kept=True)
        else:
            from .reference import select_reference
            mask, _ = select_reference(q, k, tau, config, quantized)
    with stage("attend"):
        if config.backend == "triton":
            from .triton.attend_kernel import attend_triton
            out = attend_triton(q, k, v, mask, config, kept=kept, k_mean=quantized.k_mean)
        else:
            out = _attend(q, k, v, mask, config)
    return out, mask
