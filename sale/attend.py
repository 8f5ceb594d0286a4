"""Stage 3: the computation pass: causal flash attention over the kept blocks only."""
from __future__ import annotations

import torch

from ._validation import check_config, check_mask, check_qkv
from .config import SaleConfig
from .reference import attention_reference


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                           config: SaleConfig | None = None) -> torch.Tensor:
    """Causal softmax attention over exactly the key blocks that ``mask`` keeps.

    Args:
        q: [B, Hq, N, D] float16/bfloat16/float32 (float64 with the reference backend).
        k, v: [B, Hkv, N, D], same dtype and device; Hq a multiple of Hkv (GQA, K/V not repeated).
        mask: torch.bool [B, Hq, ceil(N/block_q), ceil(N/block_k)], as ``select_blocks`` returns.
            Blocks above the diagonal are ignored (attention is causal inside every block).
        config: SaleConfig; default SaleConfig().

    Returns:
        out: [B, Hq, N, D] in q's dtype. A query row with no kept key (possible only with a
        hand-made mask that drops its diagonal block) is zero.
    """
    config = check_config(config)
    check_qkv(q, k, v, config)
    check_mask(mask, q.shape[0], q.shape[1], q.shape[2], config, q.device)
    return _attend(q, k, v, mask, config)


def _attend(q, k, v, mask, config: SaleConfig) -> torch.Tensor:
    if config.backend == "triton":
        from .triton.attend_kernel import attend_triton
        return attend_triton(q, k, v, mask, config)
    return attention_reference(q, k, v, mask, config)
