"""XAttention's antidiagonal scoring: the exact scores q_i . k_j on the antidiagonals (i + j = -1 mod stride) of
every stride x stride cell, a softmax over each query row's sampled keys, the mass of each (query block, key
block) normalised per query block, and the smallest set of blocks (largest first) reaching a cumulative mass
``mass``. One score in every ``stride`` is computed, each exactly; antidiagonals cross every row and column of a
cell, so vertical and slash patterns are both seen."""
from __future__ import annotations

import torch

from .._validation import check_config, check_qkv
from ..blocks import always_computed_blocks, causal_blocks, num_blocks
from ..config import SaleConfig
from .pooled import _check_mass, _keep_by_mass

ROW_CHUNK = 1024   # query rows scored at once: memory O(ROW_CHUNK x N) per head


def antidiagonal_block_mass(q: torch.Tensor, k: torch.Tensor, stride: int, config: SaleConfig) -> torch.Tensor:
    """float32 [B, Hq, nqb, nkb]: per query block, the share of its rows' sampled attention in each key block."""
    b, hq, n, d = q.shape
    group = hq // k.shape[1]
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    scale = config.scale_for(d)
    keys = torch.arange(n, device=q.device)
    kk = k.float().repeat_interleave(group, dim=1)
    mass = torch.zeros(b, hq, nqb, nkb, dtype=torch.float32, device=q.device)
    for r0 in range(0, n, ROW_CHUNK):
        rows = torch.arange(r0, min(r0 + ROW_CHUNK, n), device=q.device)
        s = scale * q[:, :, rows].float() @ kk.transpose(-1, -2)                        # [B, Hq, R, N]
        sampled = ((rows[:, None] + keys[None, :] + 1) % stride == 0) & (keys[None, :] <= rows[:, None])
        s = s.masked_fill(~sampled, float("-inf"))
        p = torch.softmax(s, dim=-1).nan_to_num(0.0)              # a row with no sampled key gives no mass
        per_kb = torch.zeros(b, hq, len(rows), nkb, dtype=torch.float32, device=q.device)
        per_kb.scatter_add_(-1, (keys // config.block_k).expand(b, hq, len(rows), n), p)
        mass.index_add_(2, rows // config.block_q, per_kb)
    total = mass.sum(-1, keepdim=True)
    return torch.where(total > 0, mass / total.clamp(min=1e-30), mass)


def xattention_blocks(q: torch.Tensor, k: torch.Tensor, mass: float, config: SaleConfig | None = None,
                      stride: int = 8) -> torch.Tensor:
    """XAttention's block mask.

    Args:
        q: [B, Hq, N, D]; k: [B, Hkv, N, D] (GQA); any float dtype.
        mass: in (0, 1]; per query block, key blocks largest antidiagonal mass first while the mass already taken
            is below ``mass``. 1 keeps every causal block.
        config: SaleConfig (block sizes, local window, sink blocks); default SaleConfig().
        stride: the antidiagonal stride (one score in `stride` sampled), an int >= 1; XAttention uses 8 or 16.

    Returns: torch.bool [B, Hq, ceil(N / block_q), ceil(N / block_k)], sink and local blocks always kept.
    """
    config = check_config(config)
    check_qkv(q, k, None, config.replace(backend="reference"))
    mass = _check_mass(mass)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    n = q.shape[2]
    causal = causal_blocks(n, config, q.device)
    if mass >= 1:
        keep = causal.expand(q.shape[0], q.shape[1], -1, -1).clone()
    else:
        keep = _keep_by_mass(antidiagonal_block_mass(q, k, stride, config), mass) & causal
    return keep | always_computed_blocks(n, config, q.device)
