"""Stage 2: the selection pass: 4-bit score estimate + Relative Attention Score -> block mask."""
from __future__ import annotations

import torch

from ._validation import check_config, check_qkv, thresholds_tensor
from .config import SaleConfig
from .quantize import _quantize
from .reference import QuantizedQK, block_log_scores_reference, select_reference


def select_blocks(q: torch.Tensor, k: torch.Tensor, thresholds, config: SaleConfig | None = None,
                  quantized: QuantizedQK | None = None, return_margin: bool = False):
    """The block mask of SALE's two-pass selection.

    A candidate key block (causal, neither sink nor local) is kept for a query block iff some query
    i in it and key j in it have estimated relative attention score
    exp(scale * (s_hat_ij - m_i)) / l_i > tau_h, i.e. iff max(s_hat_ij - t_i) > 0 with
    t_i = m_i + ln(tau_h * l_i) / scale.

    Args:
        q: [B, Hq, N, D] float16/bfloat16/float32 (float64 with the reference backend).
        k: [B, Hkv, N, D], same dtype and device; Hq a multiple of Hkv.
        thresholds: tau per query head: a float (all heads), a sequence or a 1-d tensor of Hq
            floats, each >= 0 (0 keeps every causal block; inf keeps only sink and local blocks).
        config: SaleConfig; default SaleConfig().
        quantized: the output of ``quantize(q, k, config)`` if already computed (else computed here).
        return_margin: also return the margin [B, Hq, nqb, nkb] (max of s_hat - t over each
            candidate block, -inf for other blocks; float32) to measure how close blocks are to a tie.

    Returns:
        mask: torch.bool [B, Hq, ceil(N/block_q), ceil(N/block_k)], True where a block is computed
        (sink and local blocks included; blocks above the diagonal False). With return_margin,
        (mask, margin).
    """
    config = check_config(config)
    check_qkv(q, k, None, config)
    tau = thresholds_tensor(thresholds, q.shape[1], q.device)
    if quantized is None:
        quantized = _quantize(q, k, config)
    if config.backend == "triton":
        from .triton.select_kernel import select_triton
        mask, margin = select_triton(q, k, tau, config, quantized, return_margin=return_margin)
    else:
        mask, margin = select_reference(q, k, tau, config, quantized)
    return (mask, margin.float()) if return_margin else mask


def block_log_scores(q: torch.Tensor, k: torch.Tensor, config: SaleConfig | None = None,
                     quantized: QuantizedQK | None = None) -> torch.Tensor:
    """Threshold-free block scores: float32 [B, Hq, nqb, nkb], the max over each candidate block of
    the log Relative Attention Score scale * (s_hat_ij - m_i) - ln(l_i); -inf for blocks that are
    not candidates. ``scores > ln(tau) | always_computed_blocks`` is the mask at threshold tau
    (up to rounding), so calibration and what-if tools estimate once for every threshold.
    Reference backend math on any device (memory O(rows x N) per slab)."""
    config = check_config(config)
    check_qkv(q, k, None, config)
    if quantized is None:
        quantized = _quantize(q, k, config)
    return block_log_scores_reference(q, k, config, quantized).float()
