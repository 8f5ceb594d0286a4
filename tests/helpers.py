"""Shared test helpers: error bounds tied to a plain low-precision PyTorch version of the same math."""
import math

import torch


def plain_attention(q, k, v, scale=None):
    """Causal attention written plainly in the inputs' own dtype (no fp32 upcast): the bound every
    kernel's error is measured against."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    n = q.shape[2]
    scale = scale if scale is not None else 1 / math.sqrt(q.shape[3])
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), -math.inf)
    return torch.softmax(s, dim=-1) @ v


def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm())


def low_precision_bound(q, k, v, ref64, factor=2.0):
    """`factor` times the relative error of plain_attention in the inputs' dtype against ref64."""
    return factor * rel_err(plain_attention(q, k, v), ref64) + 1e-7
