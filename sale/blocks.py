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
    """The kept blocks of each pair of query blocks (2j, 2j + 1) as one ring of steps of ``slots`` key blocks,
    for a computation pass whose two consumers (one per query block) read the same K/V tiles.

    Key blocks past a query block's last row are dropped. The union's blocks fall in four groups: "both" (both
    query blocks keep it and it ends before row 2j's first row), "only 0" / "only 1" (kept by one query block
    only, ending before that block's first row) and the rest (mixed). The ring holds, in this order
    (``union_ring_kinds``): the longer "only" group's excess full steps (as many as it has more than the
    other), the ``n_both // slots`` steps of "both" blocks (unmasked for both consumers), the remaining full
    "only" steps alternating (0, 1, 0, 1, ...; each unmasked for its owner and skipped by the other consumer),
    then the mixed steps (masked, computed by both): the leftovers of the three groups and the mixed blocks.
    Within a group blocks ascend. The excess comes first because a consumer keeps its last step's stage until
    its next step starts: a run of the other's steps longer than the ring's stages, anywhere but at the start,
    would wait on it forever.

    split: the alternating "only" steps are interleaved by halves instead: of each two consecutive steps
    (block 2j's k-th, block 2j + 1's k-th), the first holds the first half of both (block 2j's in the first
    ``slots // 2`` slots, block 2j + 1's in the others), the second their second halves; each consumer computes
    its half of both steps, so that both run every step after the excess (``union_ring_kinds``).

    Attributes:
        counts: int32 [B, Hq, ceil(nqb / 2), 4]: steps in the ring, "both" steps, "only 0" steps, "only 1" steps.
        codes: int32 [B, Hq, ceil(nqb / 2), (ceil(nkb / slots) + 1) * slots]: ``4 * block + flags`` (bit 0:
            block 2j keeps it, bit 1: block 2j + 1 does), ``slots`` per step, the last step padded with code 0.
            Entries past ``counts[..., 0] * slots`` are undefined.
        slots: key blocks per step.
        split: the "only" steps after the excess hold half steps of both query blocks.
    """

    counts: torch.Tensor
    codes: torch.Tensor
    slots: int
    split: bool = False


def mask_to_union_steps(mask: torch.Tensor, config: SaleConfig, slots: int, split: bool = False) -> UnionSteps:
    """Bool block mask [B, Hq, nqb, nkb] -> UnionSteps: the reference of the Triton converter, undefined
    entries set to -1."""
    if mask.dtype != torch.bool or mask.dim() != 4:
        raise ValueError(f"mask must be a 4-d torch.bool tensor, got {mask.dtype} of shape {tuple(mask.shape)}")
    nkb, bq, bk, dev = mask.shape[-1], config.block_q, config.block_k, mask.device
    rows = torch.nn.functional.pad(mask, (0, 0, 0, mask.shape[-2] % 2))
    kb = torch.arange(nkb, device=dev)
    first0 = (torch.arange(rows.shape[-2] // 2, device=dev) * 2 * bq)[:, None]
    first1 = first0 + bq
    m0 = rows[..., 0::2, :] & (kb * bk < first1)
    m1 = rows[..., 1::2, :] & (kb * bk < first1 + bq)
    flags = m0.to(torch.int64) + 2 * m1.to(torch.int64)
    groups = ((flags == 3) & ((kb + 1) * bk <= first0), (flags == 1) & ((kb + 1) * bk <= first0),
              (flags == 2) & ((kb + 1) * bk <= first1))
    mixed = (flags > 0) & ~(groups[0] | groups[1] | groups[2])
    n_both, n_only0, n_only1 = (g.sum(-1) for g in groups)
    s_both, s0, s1 = n_both // slots, n_only0 // slots, n_only1 // slots
    excess = (torch.maximum(s0, s1) - torch.minimum(s0, s1))[..., None]
    leftover = 0
    ncode = (-(-nkb // slots) + 1) * slots
    pos = torch.full(flags.shape, ncode, dtype=torch.int64, device=dev)     # ncode: not in the union
    mixed_base = ((s_both + s0 + s1) * slots)[..., None]
    for g, (members, n_steps) in enumerate(zip(groups, (s_both, s0, s1))):
        rank = members.cumsum(-1) - 1
        step, slot = rank // slots, rank % slots
        if g == 0:
            ring = excess + step
        else:   # this group's excess steps (it is the longer one) first, the rest after the "both" steps
            own_excess = torch.where(((s0 > s1) if g == 1 else (s1 > s0))[..., None], excess, 0)
            alternate = 2 * (step - own_excess) + ((slot // (slots // 2)) if split else g - 1)
            ring = torch.where(step < own_excess, step, excess + s_both[..., None] + alternate)
            if split:   # block 2j's half first in each step
                slot = torch.where(step < own_excess, slot, (g - 1) * (slots // 2) + slot % (slots // 2))
        in_steps = step < n_steps[..., None]
        extra = mixed_base + leftover + rank - n_steps[..., None] * slots
        pos = torch.where(members, torch.where(in_steps, ring * slots + slot, extra), pos)
        leftover = leftover + (members.sum(-1) - n_steps * slots)[..., None]
    pos = torch.where(mixed, mixed_base + leftover + mixed.cumsum(-1) - 1, pos)
    n_mixed = leftover[..., 0] + mixed.sum(-1)
    n_ring = s_both + s0 + s1 + -(-n_mixed // slots)
    codes = torch.full((*flags.shape[:-1], ncode + 1), -1, dtype=torch.int64, device=dev)
    codes.scatter_(-1, pos, 4 * kb + flags)
    slot = torch.arange(ncode, device=dev)
    filled = (mixed_base + n_mixed[..., None])
    codes = torch.where((slot >= filled) & (slot < (n_ring * slots)[..., None]), 0, codes[..., :ncode])
    counts = torch.stack([n_ring, s_both, s0, s1], -1).to(torch.int32)
    return UnionSteps(counts=counts, codes=codes.to(torch.int32), slots=slots, split=split)


def union_ring_kinds(n_ring: int, s_both: int, s0: int, s1: int, split: bool = False) -> list:
    """Which consumers compute each step of a UnionSteps ring: 0 both ("both" and mixed steps, and with split
    the halved "only" steps), 1 only query block 2j's consumer, 2 only block 2j + 1's (what the Gluon producer
    and consumers compute from the counts)."""
    shortest, excess = min(s0, s1), abs(s0 - s1)
    longer = 1 if s0 > s1 else 2
    return ([longer] * excess + [0] * s_both + ([0, 0] if split else [1, 2]) * shortest
            + [0] * (n_ring - excess - s_both - 2 * shortest))
