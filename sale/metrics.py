"""Accuracy and sparsity metrics of SALE against dense attention, per (batch, head)."""
from __future__ import annotations

import torch

from .blocks import candidate_blocks, causal_blocks
from .config import SaleConfig


def density(mask: torch.Tensor, seq_len: int, config: SaleConfig | None = None) -> torch.Tensor:
    """Kept causal blocks over causal blocks: float32 [B, Hq] (always-computed blocks count as kept)."""
    config = config or SaleConfig()
    causal = causal_blocks(seq_len, config, mask.device)
    return (mask & causal).sum((-1, -2)).float() / causal.sum().float()


def candidate_density(mask: torch.Tensor, seq_len: int, config: SaleConfig | None = None) -> torch.Tensor:
    """Kept candidate blocks (causal, neither sink nor local) over candidate blocks: float32 [B, Hq];
    NaN when N is so short that there are no candidates."""
    config = config or SaleConfig()
    cand = candidate_blocks(seq_len, config, mask.device)
    total = cand.sum().float()
    kept = (mask & cand).sum((-1, -2)).float()
    return kept / total if total > 0 else torch.full_like(kept, float("nan"))


def _per_head(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).double()


def relative_l1(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """sum |out - ref| / sum |ref| over each head's [N, D] output: float64 [B, H]."""
    o, r = _per_head(out), _per_head(ref)
    return (o - r).abs().sum(-1) / r.abs().sum(-1).clamp_min(torch.finfo(torch.float64).tiny)


def l1_error_per_token(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The calibration error of the SALE authors divided by N: sum |out - ref| over each head's
    [N, D] output, over N. float64 [B, H]; the authors halve tau while this is >= theta."""
    o, r = _per_head(out), _per_head(ref)
    return (o - r).abs().sum(-1) / out.shape[2]


def cosine_similarity(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each head's flattened [N, D] output with the reference: float64 [B, H]."""
    return torch.nn.functional.cosine_similarity(_per_head(out), _per_head(ref), dim=-1)


def attention_recall(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor,
                     config: SaleConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Share of each row's exact causal softmax mass that falls in kept blocks.

    Args:
        q: [B, Hq, N, D]; k: [B, Hkv, N, D]; mask: bool [B, Hq, nqb, nkb].

    Returns:
        (mean, min) over the rows of each head, float32 [B, Hq] each. Computed in slabs of rows
        (memory O(rows x N)), on q's device.
    """
    from ._validation import check_mask, check_qkv
    from .reference import kept_attention_mass
    config = config or SaleConfig()
    check_qkv(q, k, None, config.replace(backend="reference"))
    check_mask(mask, q.shape[0], q.shape[1], q.shape[2], config, q.device)
    mass = kept_attention_mass(q, k, mask, config)
    return mass.mean(-1).float(), mass.amin(-1).float()
