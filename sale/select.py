"""Stage 2: the selection pass: 4-bit score estimate + Relative Attention Score -> block mask."""
from __future__ import annotations

import torch

from ._validation import check_config, check_qkv, thresholds_tensor
from .config import SaleConfig
from .quantize import _quantize
from .reference import QuantizedQK, block_log_scores_reference, select_reference


def check_quantized(quantized, q: torch.Tensor, k: torch.Tensor) -> None:
    """ValueError unless `quantized` was made from these q and k: shapes, device, and a cheap fingerprint (the
    smoothing means, O(N * D) against the selection's O(N^2)); a quantization of other inputs would give a wrong
    mask silently."""
    if not isinstance(quantized, QuantizedQK):
        raise TypeError(f"quantized must be the QuantizedQK that quantize(q, k, config) returns, got "
                        f"{type(quantized).__name__}")
    for name, x, ref in (("q_hat", quantized.q_hat, q), ("k_hat", quantized.k_hat, k)):
        if tuple(x.shape) != tuple(ref.shape) or x.device != ref.device:
            raise ValueError(f"quantized.{name} has shape {tuple(x.shape)} on {x.device}, but the "
                             f"{name[0]} given has shape {tuple(ref.shape)} on {ref.device}: quantize these q and k")
    for name, mean, x in (("q_mean", quantized.q_mean, q), ("k_mean", quantized.k_mean, k)):
        if not torch.allclose(mean.float(), x.float().mean(dim=2), rtol=1e-3, atol=1e-3 * (1 + float(mean.abs().max()))):
            raise ValueError(f"quantized.{name} does not match the mean of the {name[0]} given: the quantization "
                             f"belongs to other inputs; quantize these q and k")


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
        quantized: the output of ``quantize(q, k, config)`` if already computed (else computed here); checked
            against q and k (shapes, device, smoothing means).
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
    else:
        check_quantized(quantized, q, k)
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
