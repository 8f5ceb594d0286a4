"""FlexPrefill's per-head choice: on the last query block, compare the pooled estimate of the block distribution
(mean query . mean keys, softmax over key blocks) with the true one (the exact attention of those rows, summed
per key block). Where they agree (Jensen-Shannon distance below ``pattern_threshold``) the head is
query-aware: each query block keeps its largest pooled blocks until ``gamma`` of the pooled mass is taken.
Elsewhere the head follows the vertical-slash pattern: the fewest key columns and diagonals whose share of the
last queries' attention reaches ``gamma``, as the blocks they cross. Knob: ``gamma`` in (0, 1]."""
from __future__ import annotations

import torch

from .._validation import check_config, check_qkv
from ..blocks import always_computed_blocks, causal_blocks, num_blocks
from ..config import SaleConfig
from .pooled import _check_mass, _keep_by_mass, _pool, pooled_log_probs
from .vertical_slash import line_scores, lines_to_blocks


def _js_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sqrt of the Jensen-Shannon divergence along the last axis (natural log), 0 for equal distributions."""
    m = 0.5 * (p + q)

    def kl(a, b):
        return torch.where(a > 0, a * (torch.log(a.clamp(min=1e-30)) - torch.log(b.clamp(min=1e-30))), 0.0).sum(-1)
    return (0.5 * kl(p, m) + 0.5 * kl(q, m)).clamp(min=0).sqrt()


def pattern_distance(q: torch.Tensor, k: torch.Tensor, config: SaleConfig) -> torch.Tensor:
    """float32 [B, Hq]: the Jensen-Shannon distance between the pooled and the exact key-block distribution of
    the last query block's rows."""
    n = q.shape[2]
    group = q.shape[1] // k.shape[1]
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    estimate = pooled_log_probs(q, k, config)[:, :, nqb - 1].exp()                       # [B, Hq, nkb]
    rows = torch.arange((nqb - 1) * config.block_q, n, device=q.device)
    keys = torch.arange(n, device=q.device)
    s = config.scale_for(q.shape[-1]) * q[:, :, rows].float() @ k.float().repeat_interleave(group, 1).transpose(-1, -2)
    a = torch.softmax(s.masked_fill(keys[None, :] > rows[:, None], float("-inf")), -1).sum(2)   # [B, Hq, N]
    true = torch.zeros_like(estimate).scatter_add_(-1, (keys // config.block_k).expand_as(a), a)
    return _js_distance(estimate, true / true.sum(-1, keepdim=True))


def _fewest_reaching(scores: torch.Tensor, gamma: float) -> torch.Tensor:
    """bool like scores [..., N]: the fewest entries (largest first) whose share of the row's sum reaches gamma."""
    share = scores / scores.sum(-1, keepdim=True).clamp(min=1e-30)
    return _keep_by_mass(share, gamma)


def flexprefill_blocks(q: torch.Tensor, k: torch.Tensor, gamma: float, config: SaleConfig | None = None,
                       pattern_threshold: float = 0.1) -> torch.Tensor:
    """FlexPrefill's block mask.

    Args:
        q: [B, Hq, N, D]; k: [B, Hkv, N, D] (GQA); any float dtype.
        gamma: in (0, 1]: the attention mass each head's pattern keeps.
        config: SaleConfig (block sizes, local window, sink blocks); default SaleConfig().
        pattern_threshold: Jensen-Shannon distance under which a head is query-aware (default 0.1), >= 0.

    Returns: torch.bool [B, Hq, ceil(N / block_q), ceil(N / block_k)], sink and local blocks always kept.
    """
    config = check_config(config)
    check_qkv(q, k, None, config.replace(backend="reference"))
    gamma = _check_mass(gamma, "gamma")
    if isinstance(pattern_threshold, bool) or not isinstance(pattern_threshold, (int, float)) or not pattern_threshold >= 0:
        raise ValueError(f"pattern_threshold must be a number >= 0, got {pattern_threshold!r}")
    n = q.shape[2]
    causal = causal_blocks(n, config, q.device)
    query_aware = pattern_distance(q, k, config) < pattern_threshold                      # [B, Hq]
    aware = _keep_by_mass(pooled_log_probs(q, k, config).exp(), gamma) & causal
    vertical, slash = line_scores(q, k, config)
    keep_v, keep_s = _fewest_reaching(vertical, gamma), _fewest_reaching(slash, gamma)
    # the kept columns and offsets as index lists padded with a repeat of a kept one (every row keeps >= 1)
    width = int(max(keep_v.sum(-1).max(), keep_s.sum(-1).max()))
    def indices(keep):
        order = torch.argsort(keep.to(torch.int8), dim=-1, descending=True, stable=True)[..., :width]
        first = order[..., :1].expand_as(order)
        return torch.where(torch.gather(keep, -1, order), order, first)
    pattern = lines_to_blocks(indices(keep_v), indices(keep_s), n, config)
    keep = torch.where(query_aware[:, :, None, None], aware, pattern)
    return keep | always_computed_blocks(n, config, q.device)
