"""The pooled block estimate (the core of SpargeAttn's and MoBA's selection): one score per (query block, key
block) from the mean query of the block and the mean key of the block, a softmax over the causal key blocks of
each query block, and the smallest set of blocks (largest first) that reaches a cumulative mass ``mass``.

Cheap (one [nqb, nkb] product per head, no per-score work) and coarse: it sees a block's average, so a single
strong key inside an otherwise cold block can be missed where SALE's per-score estimate keeps it."""
from __future__ import annotations

import math

import torch

from .._validation import check_config, check_qkv
from ..blocks import always_computed_blocks, causal_blocks, num_blocks
from ..config import SaleConfig


def _check_mass(mass, name: str = "mass") -> float:
    if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not math.isfinite(mass) or not 0 < mass <= 1:
        raise ValueError(f"{name} must be a number in (0, 1] (the share of the attention mass to keep), got {mass!r}")
    return float(mass)


def _keep_by_mass(probs: torch.Tensor, mass: float) -> torch.Tensor:
    """bool like probs [..., nkb]: per row, blocks largest first while the mass already taken is below `mass`."""
    order = torch.argsort(probs, dim=-1, descending=True, stable=True)
    sorted_p = torch.gather(probs, -1, order)
    taken_before = torch.cumsum(sorted_p, dim=-1) - sorted_p          # exclusive cumulative mass
    return torch.zeros_like(taken_before, dtype=torch.bool).scatter(-1, order, taken_before < mass)


def _pool(x: torch.Tensor, block: int) -> torch.Tensor:
    """[B, H, N, D] -> [B, H, ceil(N / block), D]: the mean of each block's rows (a last, partial block too)."""
    b, h, n, d = x.shape
    nb = num_blocks(n, block)
    padded = torch.zeros(b, h, nb * block, d, dtype=x.dtype, device=x.device)
    padded[:, :, :n] = x
    counts = torch.full((nb,), block, dtype=x.dtype, device=x.device)
    counts[-1] = n - (nb - 1) * block
    return padded.view(b, h, nb, block, d).sum(3) / counts[:, None]


def pooled_log_probs(q: torch.Tensor, k: torch.Tensor, config: SaleConfig) -> torch.Tensor:
    """float32 [B, Hq, nqb, nkb]: log of the softmax over each query block's causal key blocks of
    scale * mean(q block) . mean(k block); -inf above the diagonal."""
    n = q.shape[2]
    group = q.shape[1] // k.shape[1]
    qp = _pool(q.float(), config.block_q)
    kp = _pool(k.float(), config.block_k).repeat_interleave(group, dim=1)
    scores = config.scale_for(q.shape[-1]) * qp @ kp.transpose(-1, -2)
    scores = scores.masked_fill(~causal_blocks(n, config, q.device), float("-inf"))
    return torch.log_softmax(scores, dim=-1)


def pooled_blocks(q: torch.Tensor, k: torch.Tensor, mass: float, config: SaleConfig | None = None) -> torch.Tensor:
    """The pooled method's block mask.

    Args:
        q: [B, Hq, N, D]; k: [B, Hkv, N, D] (GQA: query head h reads kv head h // (Hq / Hkv)); any float dtype.
        mass: in (0, 1]; per query block, the causal key blocks are taken largest pooled probability first while
            the probability already taken is below ``mass`` (the block that crosses it is kept). 1 keeps every
            causal block.
        config: SaleConfig (block sizes, local window, sink blocks); default SaleConfig().

    Returns: torch.bool [B, Hq, ceil(N / block_q), ceil(N / block_k)], sink and local blocks always kept.
    """
    config = check_config(config)
    check_qkv(q, k, None, config.replace(backend="reference"))
    mass = _check_mass(mass)
    n = q.shape[2]
    causal = causal_blocks(n, config, q.device)
    if mass >= 1:
        keep = causal.expand(q.shape[0], q.shape[1], -1, -1).clone()
    else:
        keep = _keep_by_mass(pooled_log_probs(q, k, config).exp(), mass) & causal
    return keep | always_computed_blocks(n, config, q.device)
