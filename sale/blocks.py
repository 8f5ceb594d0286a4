"""Block geometry of the causal mask and the compact kept-block format.

A query block b holds rows [b*block_q, min((b+1)*block_q, N)); a key block c holds keys
[c*block_k, min((c+1)*block_k, N)). Masks are ``torch.bool`` of shape
[B, Hq, ceil(N/block_q), ceil(N/block_k)], True where a block is computed.
"""
from __future__ import annotations

import dataclasses

import torch

from .config import SaleConfig


def num_blocks(length: int, block: int) -> int:
    return -(-length // block)


def causal_blocks(seq_len: int, config: SaleConfig, device=None) -> torch.Tensor:
    """[nqb, nkb] bool: key block c holds a key at or before the last row of query block b."""
    qb = torch.arange(num_blocks(seq_len, config.block_q), device=device)
    kb = torch.arange(num_blocks(seq_len, config.block_k), device=device)
    last_row = torch.clamp((qb + 1) * config.block_q, max=seq_len) - 1
    return kb[None, :] * config.block_k <= last_row[:, None]


def always_computed_blocks(seq_len: int, config: SaleConfig, device=None) -> torch.Tensor:
    """[nqb, nkb] bool: the sink blocks and the local blocks (last key within local_window tokens
    before the query block's first row, up to the diagonal). These are computed whatever the
    threshold and give the two-pass statistics m_i, l_i."""
    qb = torch.arange(num_blocks(seq_len, config.block_q), device=device)
    kb = torch.arange(num_blocks(seq_len, config.block_k), device=device)
    first_row = qb * config.block_q
    last_key = (kb + 1) * config.block_k - 1
    local = last_key[None, :] >= (first_row[:, None] - config.local_window)
    sink = (kb < config.sink_blocks)[None, :]
    return causal_blocks(seq_len, config, device) & (local | sink)


def candidate_blocks(seq_len: int, config: SaleConfig, device=None) -> torch.Tensor:
    """[nqb, nkb] bool: causal blocks whose computation the estimate decides."""
    return causal_blocks(seq_len, config, device) & ~always_computed_blocks(seq_len, config, device)


def expand_block_mask(mask: torch.Tensor, seq_len: int, config: SaleConfig) -> torch.Tensor:
    """A [..., nqb, nkb] block mask as a [..., N, N] token mask (for references and small N only)."""
    tokens = mask.repeat_interleave(config.block_q, dim=-2).repeat_interleave(config.block_k, dim=-1)
    return tokens[..., :seq_len, :seq_len]


@dataclasses.dataclass
class KeptBlocks:
    """Compact per-query-block lists of kept key blocks (what the computation pass reads).

    Attributes:
        counts: int32 [B, Hq, nqb], number of kept key blocks of each query block.
        indices: int32 [B, Hq, nqb, nkb], the kept key-block indices in ascending order in
            ``indices[..., :counts]``; entries past the count are -1.
    """

    counts: torch.Tensor
    indices: torch.Tensor

    @property
    def num_key_blocks(self) -> int:
        return self.indices.shape[-1]


def mask_to_kept(mask: torch.Tensor) -> KeptBlocks:
    """Bool block mask [B, Hq, nqb, nkb] -> KeptBlocks (ascending indices, -1 padding)."""
    if mask.dtype != torch.bool or mask.dim() != 4:
        raise ValueError(f"mask must be a 4-d torch.bool tensor, got {mask.dtype} of shape {tuple(mask.shape)}")
    nkb = mask.shape[-1]
    counts = mask.sum(-1, dtype=torch.int32)
    # A stable sort of "not kept" puts kept blocks first and keeps them in ascending order.
    order = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices.to(torch.int32)
    slot = torch.arange(nkb, device=mask.device, dtype=torch.int32)
    indices = torch.where(slot < counts[..., None], order, torch.full_like(order, -1))
    return KeptBlocks(counts=counts, indices=indices)


def kept_to_mask(kept: KeptBlocks) -> torch.Tensor:
    """KeptBlocks -> bool block mask [B, Hq, nqb, nkb]."""
    nkb = kept.num_key_blocks
    slot = torch.arange(nkb, device=kept.indices.device)
    valid = slot < kept.counts[..., None].to(torch.int64)
    mask = torch.zeros(kept.indices.shape, dtype=torch.bool, device=kept.indices.device)
    idx = torch.where(valid, kept.indices.to(torch.int64), torch.zeros_like(kept.indices, dtype=torch.int64))
    mask.scatter_(-1, idx, valid)
    # scatter_ writes False for padded slots at index 0; put block 0 back where it is kept.
    mask[..., 0] = (valid & (kept.indices == 0)).any(-1)
    return mask
