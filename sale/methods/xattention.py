"""XAttention's antidiagonal scoring (Xu et al., 2025): the sum of q_i . k_j along one antidiagonal (i + j = -1
mod stride) of every stride x stride cell is one score per cell, a softmax (temperature scale / stride) over each
query cell row's cells at or before the diagonal, the mass of each (query block, key block) summed over its cells
and normalised per query block, and the smallest set of blocks (largest first) reaching a cumulative mass
``mass``. The antidiagonal sum is one dot product of two reshaped vectors (a cell's stride query rows in reverse
order, concatenated, against its stride keys, concatenated), so the scores are one matrix product of N/stride x
N/stride at stride x D: 1/stride of dense attention's q . k work, on the tensor cores for 16-bit inputs.
Antidiagonals cross every row and column of a cell, so vertical and slash patterns are both seen."""
from __future__ import annotations

import torch

from .._validation import check_config, check_qkv
from ..blocks import always_computed_blocks, causal_blocks, num_blocks
from ..config import SaleConfig
from .pooled import _check_mass, _keep_by_mass

CELL_CHUNK = 1024   # query cells scored at once: memory O(CELL_CHUNK x N / stride) per head


def _cells(x: torch.Tensor, stride: int, reverse: bool) -> torch.Tensor:
    """[B, H, N, D] -> [B, H, ceil(N / stride), stride * D]: each cell's stride rows concatenated (in reverse order
    for the queries, so that a dot product runs along the cell's antidiagonal), zero rows past N."""
    b, h, n, d = x.shape
    cells = num_blocks(n, stride)
    padded = x.new_zeros(b, h, cells * stride, d)
    padded[:, :, :n] = x
    padded = padded.view(b, h, cells, stride, d)
    if reverse:
        padded = padded.flip(3)
    return padded.reshape(b, h, cells, stride * d)


def antidiagonal_block_mass(q: torch.Tensor, k: torch.Tensor, stride: int, config: SaleConfig) -> torch.Tensor:
    """float32 [B, Hq, nqb, nkb]: per query block, the share of its cells' antidiagonal attention in each key
    block. Scores in q's dtype for 16-bit inputs (float32 accumulation), float32 otherwise; softmax in float32."""
    b, hq, n, d = q.shape
    group = hq // k.shape[1]
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    per_qb, per_kb = config.block_q // stride, config.block_k // stride
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.float32
    qc = _cells(q.to(dtype), stride, reverse=True)                               # [B, Hq, M, S*D]
    kc = _cells(k.to(dtype), stride, reverse=False).repeat_interleave(group, dim=1)
    m = qc.shape[2]
    scale = config.scale_for(d) / stride
    mass = torch.zeros(b, hq, nqb, nkb, dtype=torch.float32, device=q.device)
    chunk = CELL_CHUNK - CELL_CHUNK % per_qb
    cells = torch.arange(m, device=q.device)
    for a0 in range(0, m, chunk):
        a1 = min(a0 + chunk, m)
        s = (qc[:, :, a0:a1] @ kc[:, :, :a1].transpose(-1, -2)).float() * scale     # [B, Hq, R, a1]
        s = s.masked_fill(cells[None, :a1] > cells[a0:a1, None], float("-inf"))
        p = torch.softmax(s, dim=-1)
        kb_of_cell = (cells[:a1] // per_kb).expand(b, hq, a1 - a0, a1)
        by_kb = torch.zeros(b, hq, a1 - a0, nkb, dtype=torch.float32, device=q.device)
        by_kb.scatter_add_(-1, kb_of_cell, p)
        mass.index_add_(2, cells[a0:a1] // per_qb, by_kb)
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
        stride: the cell size (one antidiagonal of stride scores summed per stride x stride cell), an int >= 1
            dividing block_q and block_k; XAttention uses 8 or 16.

    Returns: torch.bool [B, Hq, ceil(N / block_q), ceil(N / block_k)], sink and local blocks always kept.
    """
    config = check_config(config)
    check_qkv(q, k, None, config.replace(backend="reference"))
    mass = _check_mass(mass)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1, got {stride!r}")
    if config.block_q % stride or config.block_k % stride:
        raise ValueError(f"stride ({stride}) must divide block_q ({config.block_q}) and block_k ({config.block_k})")
    n = q.shape[2]
    causal = causal_blocks(n, config, q.device)
    if mass >= 1:
        keep = causal.expand(q.shape[0], q.shape[1], -1, -1).clone()
    else:
        keep = _keep_by_mass(antidiagonal_block_mass(q, k, stride, config), mass) & causal
    return keep | always_computed_blocks(n, config, q.device)
