"""Stage 1: smoothing and 4-bit quantization of Q and K."""
from __future__ import annotations

import torch

from ._validation import check_config, check_qkv
from .config import SaleConfig
from .reference import QuantizedQK, quantize_reference


def quantize(q: torch.Tensor, k: torch.Tensor, config: SaleConfig | None = None) -> QuantizedQK:
    """Smooth Q and K by their sequence means and quantize them to 4-bit integers.

    Args:
        q: [B, Hq, N, D] float16, bfloat16 or float32 (float64 with the reference backend).
        k: [B, Hkv, N, D], same dtype and device; Hq a multiple of Hkv.
        config: SaleConfig; default SaleConfig() (per-token scales, reference backend).

    Returns:
        QuantizedQK with q_hat int8 [B, Hq, N, D], q_scale float32 [B, Hq, N], k_hat int8
        [B, Hkv, N, D], k_scale float32 [B, Hkv, N], qmk float32 [B, Hq, N], q_mean float32
        [B, Hq, D], k_mean float32 [B, Hkv, D]. Per-group scales are stored per token (equal
        within a group).
    """
    config = check_config(config)
    check_qkv(q, k, None, config)
    return _quantize(q, k, config)


def _quantize(q, k, config: SaleConfig) -> QuantizedQK:
    if config.backend == "triton":
        from .triton.quantize_kernel import quantize_triton
        return quantize_triton(q, k, config)
    return quantize_reference(q, k, config)
