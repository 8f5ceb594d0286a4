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


@dataclasses.dataclass
class KeptSteps:
    """The kept blocks of each query block as the split form of the computation pass walks them.

    Attributes:
        counts: int32 [B, Hq, nqb, 3]: full pairs, lone blocks, tail pairs.
        steps: int32 [B, Hq, nqb, ceil(nkb / 2)]. From the front, ascending: the full pairs c (key blocks
            2c and 2c+1 both kept, every key before the query block's first row). From the end backwards,
            ascending: the lone kept blocks, then the pairs that reach the first row (computed with the
            causal mask), both as codes ``4 * c + flags`` (bit 0: block 2c kept, bit 1: block 2c+1).
            Other entries are undefined.
    """

    counts: torch.Tensor
    steps: torch.Tensor


def mask_to_steps(mask: torch.Tensor, config: SaleConfig) -> KeptSteps:
    """Bool block mask [B, Hq, nqb, nkb] (causal blocks only) -> KeptSteps: the reference of the Triton
    converter, undefined entries set to -1."""
    if mask.dtype != torch.bool or mask.dim() != 4:
        raise ValueError(f"mask must be a 4-d torch.bool tensor, got {mask.dtype} of shape {tuple(mask.shape)}")
    halves = torch.nn.functional.pad(mask, (0, mask.shape[-1] % 2)).unflatten(-1, (-1, 2)).to(torch.int32)
    flags = halves[..., 0] + 2 * halves[..., 1]          # [B, Hq, nqb, npb]
    pair = torch.arange(flags.shape[-1], device=mask.device)
    first_row = (torch.arange(mask.shape[-2], device=mask.device) * config.block_q)[:, None]
    tail = (flags > 0) & ((pair + 1) * (2 * config.block_k) > first_row)
    full = (flags == 3) & ~tail
    rest = (flags > 0) & ~full
    codes = 4 * pair + flags
    front, back = mask_to_kept(full), mask_to_kept(rest)   # ascending pair indices, -1 padding
    steps = torch.where(front.indices >= 0, front.indices, -1)
    back_codes = torch.where(back.indices >= 0, codes.gather(-1, back.indices.clamp(min=0).to(torch.int64)), -1)
    steps = torch.where(back.indices.flip(-1) >= 0, back_codes.flip(-1), steps)
    counts = torch.stack([full.sum(-1), (rest & ~tail).sum(-1), tail.sum(-1)], -1).to(torch.int32)
    return KeptSteps(counts=counts, steps=steps)


@dataclasses.dataclass
class UnionSteps:
    """The kept blocks of each pair of query blocks (2j, 2j + 1) as one list of steps of ``slots`` key blocks,
    for a computation pass whose two consumers (one per query block) read the same K/V tiles.

    Attributes:
        counts: int32 [B, Hq, ceil(nqb / 2), 2]: steps, and how many of them come first unmasked.
        codes: int32 [B, Hq, ceil(nqb / 2), ceil(nkb / slots) * slots]: ``4 * block + flags`` (bit 0: block 2j
            keeps it, bit 1: block 2j + 1 does), each key block of the union once, ``slots`` per step. First,
            ascending, the blocks both keep that end before row 2j's first row (the unmasked steps, as many as
            fill whole steps); then, ascending, the rest of those and every other block of the union; the last
            step padded with code 0 (kept by neither). Entries past ``counts[..., 0] * slots`` are undefined.
        slots: key blocks per step.
    """

    counts: torch.Tensor
    codes: torch.Tensor
    slots: int


def mask_to_union_steps(mask: torch.Tensor, config: SaleConfig, slots: int) -> UnionSteps:
    """Bool block mask [B, Hq, nqb, nkb] (causal blocks only) -> UnionSteps: the reference of the Triton
    converter, undefined entries set to -1."""
    if mask.dtype != torch.bool or mask.dim() != 4:
        raise ValueError(f"mask must be a 4-d torch.bool tensor, got {mask.dtype} of shape {tuple(mask.shape)}")
    nkb = mask.shape[-1]
    rows = torch.nn.functional.pad(mask, (0, 0, 0, mask.shape[-2] % 2)).to(torch.int32)
    flags = rows[..., 0::2, :] + 2 * rows[..., 1::2, :]              # [B, Hq, npairs, nkb]
    kb = torch.arange(nkb, device=mask.device)
    first_row = (torch.arange(flags.shape[-2], device=mask.device) * 2 * config.block_q)[:, None]
    both = (flags == 3) & ((kb + 1) * config.block_k <= first_row)
    rest = (flags > 0) & ~both
    order = torch.sort(torch.where(both, kb, torch.where(rest, nkb + kb, 2 * nkb + kb)), dim=-1).values
    blocks = order % nkb
    codes = 4 * blocks + flags.gather(-1, blocks)
    n_union = (flags > 0).sum(-1)
    n_steps = -(-n_union // slots)
    ncode = -(-nkb // slots) * slots
    slot = torch.arange(ncode, device=mask.device)
    codes = torch.nn.functional.pad(codes, (0, ncode - nkb), value=0)
    codes = torch.where(slot < n_union[..., None], codes, torch.where(slot < (n_steps * slots)[..., None], 0, -1))
    counts = torch.stack([n_steps, both.sum(-1) // slots], -1).to(torch.int32)
    return UnionSteps(counts=counts, codes=codes.to(torch.int32), slots=slots)
