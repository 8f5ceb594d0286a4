"""Dense attention: the exact causal reference and PyTorch SDPA baselines (one per backend)."""
from __future__ import annotations

import torch

from ._validation import check_qkv
from .config import SaleConfig
from .reference import attention_reference

SDPA_BACKENDS = ("cudnn", "flash", "efficient", "math")


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    softmax_scale: float | None = None) -> torch.Tensor:
    """Exact causal attention computed in float32 (float64 for float64 inputs).

    Args:
        q: [B, Hq, N, D] float16/bfloat16/float32/float64.
        k, v: [B, Hkv, N, D], same dtype and device; Hq a multiple of Hkv.
        softmax_scale: default 1/sqrt(D).

    Returns:
        out: [B, Hq, N, D] in q's dtype.
    """
    config = SaleConfig(softmax_scale=softmax_scale)
    check_qkv(q, k, v, config)
    return attention_reference(q, k, v, None, config)


def _sdpa_backend_enum(name: str):
    from torch.nn.attention import SDPBackend
    return {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str,
                   softmax_scale: float | None = None) -> torch.Tensor:
    """Causal ``scaled_dot_product_attention`` pinned to one backend.

    Args:
        q: [B, Hq, N, D]; k, v: [B, Hkv, N, D] (GQA through SDPA's enable_gqa, K/V not repeated).
        backend: one of "cudnn", "flash", "efficient", "math".
        softmax_scale: default 1/sqrt(D).

    Returns:
        out: [B, Hq, N, D] in q's dtype. Raises RuntimeError when the backend cannot run these inputs.
    """
    if backend not in SDPA_BACKENDS:
        raise ValueError(f"backend must be one of {SDPA_BACKENDS}, got {backend!r}")
    check_qkv(q, k, v, SaleConfig(check_finite=False))
    from torch.nn.attention import sdpa_kernel
    with sdpa_kernel([_sdpa_backend_enum(backend)]):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=softmax_scale, enable_gqa=q.shape[1] != k.shape[1])
