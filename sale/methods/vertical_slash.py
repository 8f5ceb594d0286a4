"""MInference's vertical-slash pattern: the attention of the last 64 queries (exact, causal) scores every key
column (the "vertical" lines: the sum of its weights) and every diagonal offset (the "slash" lines: the sum of
the weights at query - key = offset); the ``top_k`` strongest of each are kept, and a block is computed where a
kept key column or a kept diagonal passes through it.

One knob, ``top_k``: how many vertical keys and how many slash diagonals each head keeps. Cheap (64 rows of
attention per head); it assumes every query attends along the same columns and diagonals as the last ones."""
from __future__ import annotations

import torch

from .._validation import check_config, check_qkv
from ..blocks import always_computed_blocks, causal_blocks, num_blocks
from ..config import SaleConfig

LAST_QUERIES = 64


def _check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1 (vertical keys and slash diagonals kept per head), got {top_k!r}")
    return top_k


def line_scores(q: torch.Tensor, k: torch.Tensor, config: SaleConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(vertical [B, Hq, N], slash [B, Hq, N]) float32: the last queries' attention summed over each key column
    and over each diagonal offset (query - key)."""
    n = q.shape[2]
    group = q.shape[1] // k.shape[1]
    rows = torch.arange(max(0, n - LAST_QUERIES), n, device=q.device)
    keys = torch.arange(n, device=q.device)
    kk = k.float().repeat_interleave(group, dim=1)
    s = config.scale_for(q.shape[-1]) * q[:, :, rows].float() @ kk.transpose(-1, -2)       # [B, Hq, R, N]
    s = s.masked_fill(keys[None, :] > rows[:, None], float("-inf"))
    a = torch.softmax(s, dim=-1)
    vertical = a.sum(2)
    offset = (rows[:, None] - keys[None, :]).clamp(min=0)                                 # [R, N]
    slash = torch.zeros_like(vertical).scatter_add_(
        -1, offset.reshape(-1).expand(*a.shape[:2], -1), a.reshape(*a.shape[:2], -1))
    return vertical, slash


def lines_to_blocks(vertical_keys: torch.Tensor, slash_offsets: torch.Tensor, n: int,
                    config: SaleConfig) -> torch.Tensor:
    """bool [B, Hq, nqb, nkb]: the causal blocks a kept key column ([B, Hq, kv]) or a kept diagonal ([B, Hq, ks])
    passes through. A diagonal of offset o (key = row - o) crosses block (b, c) iff some key of block c lies at
    an offset in [first row of b - last key of c, last row of b - first key of c]: a count of kept offsets over that
    range, read from their running sum (work O(N + blocks), whatever the number of lines)."""
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    b, h = vertical_keys.shape[:2]
    dev = vertical_keys.device
    cols = torch.zeros(b, h, nkb, dtype=torch.bool, device=dev)
    cols.scatter_(-1, vertical_keys // config.block_k, True)
    offsets = torch.zeros(b, h, n, dtype=torch.int32, device=dev)
    offsets.scatter_(-1, slash_offsets, 1)
    running = torch.nn.functional.pad(offsets.cumsum(-1, dtype=torch.int32), (1, 0))   # running[i]: kept below i
    first = torch.arange(nqb, device=dev) * config.block_q
    last = torch.clamp(first + config.block_q, max=n) - 1
    key_lo = torch.arange(nkb, device=dev) * config.block_k
    key_hi = torch.clamp(key_lo + config.block_k, max=n) - 1
    lo = (first[:, None] - key_hi[None, :]).clamp(0, n)                                  # [nqb, nkb]
    hi = (last[:, None] - key_lo[None, :] + 1).clamp(0, n)                               # exclusive
    flat = lambda x: x.reshape(1, 1, -1).expand(b, h, -1)
    crossed = (torch.gather(running, -1, flat(hi)) - torch.gather(running, -1, flat(lo))).view(b, h, nqb, nkb) > 0
    return (cols[:, :, None, :] | crossed) & causal_blocks(n, config, dev)


def vertical_slash_blocks(q: torch.Tensor, k: torch.Tensor, top_k: int,
                          config: SaleConfig | None = None) -> torch.Tensor:
    """The vertical-slash method's block mask.

    Args:
        q: [B, Hq, N, D]; k: [B, Hkv, N, D] (GQA); any float dtype.
        top_k: vertical keys and slash diagonals kept per head (each capped at N).
        config: SaleConfig (block sizes, local window, sink blocks); default SaleConfig().

    Returns: torch.bool [B, Hq, ceil(N / block_q), ceil(N / block_k)], sink and local blocks always kept.
    """
    config = check_config(config)
    check_qkv(q, k, None, config.replace(backend="reference"))
    top_k = min(_check_top_k(top_k), q.shape[2])
    vertical, slash = line_scores(q, k, config)
    keep_v = torch.topk(vertical, top_k, dim=-1).indices
    keep_s = torch.topk(slash, top_k, dim=-1).indices
    return lines_to_blocks(keep_v, keep_s, q.shape[2], config) | always_computed_blocks(q.shape[2], config, q.device)
