"""Pure-PyTorch reference of every SALE stage, written to read as the algorithm (docs/algorithm.md).

Everything runs in float32 (float64 for float64 inputs) on any device, in slabs of query rows so
that no [N, N] tensor is ever held whole. The Triton kernels are checked against these functions.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .blocks import always_computed_blocks, candidate_blocks, num_blocks
from .config import SaleConfig

# Rows of the score map held at once: B * Hq * rows * N * 4 bytes stays near this many bytes.
_SLAB_BYTES = 256 * 2**20


@dataclasses.dataclass
class QuantizedQK:
    """The smoothed 4-bit Q and K and what the estimate needs beside them.

    Attributes:
        q_hat: int8 [B, Hq, N, D], round_half_even((q - q_mean) / q_scale), in [-7, 7].
        q_scale: float32 [B, Hq, N], amax / 7 of each row's group (per token: the row itself).
        k_hat: int8 [B, Hkv, N, D], round_half_even((k - k_mean) / k_scale), in [-7, 7].
        k_scale: float32 [B, Hkv, N], likewise per key.
        qmk: float32 [B, Hq, N], q_mean . k_s_j for each query head and key j.
        q_mean: float32 [B, Hq, D], mean of q over the sequence.
        k_mean: float32 [B, Hkv, D], mean of k over the sequence.
    """

    q_hat: torch.Tensor
    q_scale: torch.Tensor
    k_hat: torch.Tensor
    k_scale: torch.Tensor
    qmk: torch.Tensor
    q_mean: torch.Tensor
    k_mean: torch.Tensor


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _rows_per_slab(batch: int, heads: int, seq_len: int, multiple: int) -> int:
    rows = max(1, _SLAB_BYTES // max(1, 4 * batch * heads * seq_len))
    return max(multiple, (rows // multiple) * multiple)


def _group_amax(x: torch.Tensor, group: int) -> torch.Tensor:
    """amax of |x| over D and over groups of `group` rows, broadcast back to every row: [B, H, N]."""
    amax = x.abs().amax(-1)
    if group == 1:
        return amax
    n = amax.shape[-1]
    pad = (-n) % group
    padded = torch.nn.functional.pad(amax, (0, pad))
    per_group = padded.view(*amax.shape[:-1], -1, group).amax(-1)
    return per_group.repeat_interleave(group, dim=-1)[..., :n]


def quantize_4bit(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 4-bit quantization: x_hat = round_half_even(x * (7 / amax)), scale = amax / 7.

    A zero amax gives x_hat = 0 and scale = 0. Returns (int8 x_hat, scale [B, H, N])."""
    amax = _group_amax(x, group)
    inv = torch.where(amax > 0, 7.0 / amax, torch.zeros_like(amax))
    x_hat = torch.round(x * inv[..., None]).clamp_(-7, 7).to(torch.int8)
    return x_hat, amax / 7.0


def quantize_int8_blocks(x: torch.Tensor, block_rows: int, mean: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 8-bit quantization of x - mean (mean: float32 [B, H, D] or None) with one scale per
    block of ``block_rows`` rows of each head, in float32: x_hat = round_half_even(x_s * (127 / amax)),
    scale = amax / 127 (a zero amax gives x_hat = 0, scale = 1). The computation pass's int8 q . k.

    Returns (int8 x_hat [B, H, N, D], float32 scale [B, H, ceil(N / block_rows)])."""
    batch, heads, seq_len, _ = x.shape
    xs = x.float() - mean[:, :, None] if mean is not None else x.float()
    pad = (-seq_len) % block_rows
    amax = torch.nn.functional.pad(xs.abs().amax(-1), (0, pad)).view(batch, heads, -1, block_rows).amax(-1)
    # tensor / tensor is correctly rounded, as the kernel's division; scalar / tensor is not (reciprocal * 127)
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0) / amax, torch.zeros_like(amax))
    per_row = inv.repeat_interleave(block_rows, dim=-1)[..., :seq_len, None]
    x_hat = torch.round(xs * per_row).clamp_(-127, 127).to(torch.int8)
    # a block of zeros keeps scale 1: any scale represents it, and the kernel's score scale stays positive
    return x_hat, torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))


def int8_qk_operands(q: torch.Tensor, k: torch.Tensor, config: SaleConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k as the int8 computation pass sees them (``SaleConfig.int8_qk``): dequantized x_hat * scale,
    q per token, k - k_mean per 2 * block_k keys (softmax is invariant to k_mean)."""
    k_mean = k.mean(2, dtype=torch.float32)
    q_hat, q_scale = quantize_int8_blocks(q, 1)
    k_hat, k_scale = quantize_int8_blocks(k, 2 * config.block_k, k_mean)
    cdt = compute_dtype(q)
    deq = [x_hat.to(cdt) * s.to(cdt).repeat_interleave(rows, dim=-1)[..., :x_hat.shape[2], None]
           for x_hat, s, rows in ((q_hat, q_scale, 1), (k_hat, k_scale, 2 * config.block_k))]
    return deq[0], deq[1]


def quantize_reference(q: torch.Tensor, k: torch.Tensor, config: SaleConfig) -> QuantizedQK:
    cdt = compute_dtype(q)
    # The same reduction call as the triton backend, so both get bit-identical means on a device
    # (a last-bit difference can flip a 4-bit value sitting on a .5 tie).
    q_mean = q.mean(2, dtype=cdt)
    k_mean = k.mean(2, dtype=cdt)
    q_c = q.to(cdt) - q_mean[:, :, None]
    k_s = k.to(cdt) - k_mean[:, :, None]
    per_group = config.granularity == "per_group"
    q_hat, q_scale = quantize_4bit(q_c, config.q_group_size if per_group else 1)
    k_hat, k_scale = quantize_4bit(k_s, config.k_group_size if per_group else 1)
    group = q.shape[1] // k.shape[1]
    # qmk[b, h, j] = q_mean[b, h] . k_s[b, h // group, j]
    qmk = torch.einsum("bhgd,bhnd->bhgn", q_mean.view(q.shape[0], k.shape[1], group, -1), k_s)
    return QuantizedQK(q_hat, q_scale.float(), k_hat, k_scale.float(),
                       qmk.reshape(q.shape[0], q.shape[1], -1).float(), q_mean.float(), k_mean.float())


def _grouped(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """[B, Hq, ...] -> [B, Hkv, G, ...] so GQA broadcasts against [B, Hkv, 1, ...] without repeating K."""
    return x.view(x.shape[0], kv_heads, x.shape[1] // kv_heads, *x.shape[2:])


def _token_block_mask(block_mask: torch.Tensor, rows: slice, seq_len: int, config: SaleConfig) -> torch.Tensor:
    """Token mask [..., rows, N] of the block mask, for query rows `rows`, causal (key <= row)."""
    row_idx = torch.arange(rows.start, rows.stop, device=block_mask.device)
    key_idx = torch.arange(seq_len, device=block_mask.device)
    kept = block_mask[..., row_idx // config.block_q, :][..., key_idx // config.block_k]
    return kept & (key_idx[None, :] <= row_idx[:, None])


def estimate_scores(quant: QuantizedQK, rows: slice, kv_heads: int) -> torch.Tensor:
    """s_hat [B, Hq, rows, N] = sq_i * sk_j * <q_hat_i, k_hat_j> + qmk_j (integer dot, exact)."""
    cdt = torch.float64 if quant.q_mean.dtype == torch.float64 else torch.float32
    q_hat = _grouped(quant.q_hat[:, :, rows].to(cdt), kv_heads)             # [B, Hkv, G, R, D]
    k_hat = quant.k_hat.to(cdt)[:, :, None]                                   # [B, Hkv, 1, N, D]
    dot = q_hat @ k_hat.transpose(-1, -2)                                     # exact: |dot| <= 49 D < 2^24
    sq = _grouped(quant.q_scale[:, :, rows].to(cdt), kv_heads)[..., None]    # [B, Hkv, G, R, 1]
    sk = quant.k_scale.to(cdt)[:, :, None, None, :]                           # [B, Hkv, 1, 1, N]
    qmk = _grouped(quant.qmk.to(cdt), kv_heads)[:, :, :, None, :]             # [B, Hkv, G, 1, N]
    return (dot * sq * sk + qmk).flatten(1, 2)


def exact_scores(q: torch.Tensor, k: torch.Tensor, k_mean: torch.Tensor, rows: slice) -> torch.Tensor:
    """s [B, Hq, rows, N] = q_i . k_s_j in the compute dtype."""
    cdt = compute_dtype(q)
    k_s = (k.to(cdt) - k_mean.to(cdt)[:, :, None])[:, :, None]
    q_rows = _grouped(q[:, :, rows].to(cdt), k.shape[1])
    return (q_rows @ k_s.transpose(-1, -2)).flatten(1, 2)


def row_statistics(q: torch.Tensor, k: torch.Tensor, k_mean: torch.Tensor, config: SaleConfig,
                   rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-pass statistics over the sink and local keys j <= i: m_i = max_j s_ij and
    l_i = sum_j exp(scale * (s_ij - m_i)); each [B, Hq, rows]."""
    seq_len, scale = q.shape[2], config.scale_for(q.shape[3])
    always = always_computed_blocks(seq_len, config, q.device)
    region = _token_block_mask(always, rows, seq_len, config)
    s = exact_scores(q, k, k_mean, rows).masked_fill(~region, -math.inf)
    m = s.amax(-1)
    l = torch.exp(scale * (s - m[..., None])).sum(-1)
    return m, l


def row_thresholds(m: torch.Tensor, l: torch.Tensor, tau: torch.Tensor, scale: float) -> torch.Tensor:
    """t_i = m_i + ln(tau_h * l_i) / scale, [B, Hq, rows]; tau = 0 gives -inf (every block kept)."""
    return m + torch.log(tau.to(m.dtype)[None, :, None] * l) / scale


def _block_max(x: torch.Tensor, rows: slice, seq_len: int, config: SaleConfig) -> torch.Tensor:
    """Max of x [B, H, rows, N] over each (query block, key block) tile: [B, H, rows/block_q, nkb]."""
    nkb = num_blocks(seq_len, config.block_k)
    n_rows = rows.stop - rows.start
    pad_rows = (-n_rows) % config.block_q
    x = torch.nn.functional.pad(x, (0, nkb * config.block_k - seq_len, 0, pad_rows), value=-math.inf)
    x = x.view(*x.shape[:2], -1, config.block_q, nkb, config.block_k)
    return x.amax(dim=(3, 5))


def _candidate_region(candidates: torch.Tensor, rows: slice, seq_len: int, config: SaleConfig) -> torch.Tensor:
    """Token mask [rows, N] of the (row, key) pairs whose estimate can keep a block: the candidate
    blocks (``candidate_blocks``), causal, restricted to the sampled rows when config.estimate_rows is set."""
    region = _token_block_mask(candidates, rows, seq_len, config)
    stride = config.estimate_row_stride
    if stride > 1:
        row_idx = torch.arange(rows.start, rows.stop, device=candidates.device)
        region = region & ((row_idx % config.block_q) % stride == 0)[:, None]
    return region


def select_reference(q: torch.Tensor, k: torch.Tensor, tau: torch.Tensor, config: SaleConfig,
                     quant: QuantizedQK) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-pass selection. Returns (mask, margin): mask bool [B, Hq, nqb, nkb]; margin float
    [B, Hq, nqb, nkb] = max over the block of s_hat_ij - t_i for candidate blocks, -inf elsewhere.
    A candidate block is kept iff its margin > 0."""
    batch, hq, seq_len, head_dim = q.shape
    scale = config.scale_for(head_dim)
    nqb, nkb = num_blocks(seq_len, config.block_q), num_blocks(seq_len, config.block_k)
    candidates = candidate_blocks(seq_len, config, q.device)
    margin = torch.full((batch, hq, nqb, nkb), -math.inf, dtype=compute_dtype(q), device=q.device)
    step = _rows_per_slab(batch, hq, seq_len, config.block_q)
    for start in range(0, seq_len, step):
        rows = slice(start, min(start + step, seq_len))
        m, l = row_statistics(q, k, quant.k_mean, config, rows)
        t = row_thresholds(m, l, tau, scale)
        s_hat = estimate_scores(quant, rows, k.shape[1])
        region = _candidate_region(candidates, rows, seq_len, config)
        margin_tokens = (s_hat - t[..., None]).masked_fill(~region, -math.inf)
        margin[:, :, start // config.block_q:(rows.stop + config.block_q - 1) // config.block_q] = \
            _block_max(margin_tokens, rows, seq_len, config)
    mask = (margin > 0) | always_computed_blocks(seq_len, config, q.device)
    return mask, margin


def block_log_scores_reference(q: torch.Tensor, k: torch.Tensor, config: SaleConfig,
                               quant: QuantizedQK) -> torch.Tensor:
    """Max log Relative Attention Score of each candidate block, [B, Hq, nqb, nkb] (-inf elsewhere):
    max over the block of scale * (s_hat_ij - m_i) - ln(l_i). A candidate block is kept at threshold
    tau iff this exceeds ln(tau) (rounding aside), so one estimate serves every threshold."""
    batch, hq, seq_len, head_dim = q.shape
    scale = config.scale_for(head_dim)
    candidates = candidate_blocks(seq_len, config, q.device)
    out = []
    step = _rows_per_slab(batch, hq, seq_len, config.block_q)
    for start in range(0, seq_len, step):
        rows = slice(start, min(start + step, seq_len))
        m, l = row_statistics(q, k, quant.k_mean, config, rows)
        log_ras = scale * (estimate_scores(quant, rows, k.shape[1]) - m[..., None]) - torch.log(l)[..., None]
        region = _candidate_region(candidates, rows, seq_len, config)
        out.append(_block_max(log_ras.masked_fill(~region, -math.inf), rows, seq_len, config))
    return torch.cat(out, dim=2)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor | None,
                        config: SaleConfig) -> torch.Tensor:
    """Causal softmax attention over the keys of the kept blocks (all causal keys when block_mask is
    None), in the compute dtype, returned in q's dtype. A row with no kept key gives zeros. With
    ``config.int8_qk`` the scores come from the 8-bit q and k (``int8_qk_operands``)."""
    batch, hq, seq_len, head_dim = q.shape
    cdt, scale = compute_dtype(q), config.scale_for(head_dim)
    out_dtype = q.dtype
    if config.int8_qk:
        q, k = int8_qk_operands(q, k, config)
    kv_heads = k.shape[1]
    k_c, v_c = k.to(cdt)[:, :, None], v.to(cdt)[:, :, None]
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    full = torch.ones(1, 1, num_blocks(seq_len, config.block_q), num_blocks(seq_len, config.block_k),
                      dtype=torch.bool, device=q.device)
    blocks = full if block_mask is None else block_mask
    step = _rows_per_slab(batch, hq, seq_len, config.block_q)
    for start in range(0, seq_len, step):
        rows = slice(start, min(start + step, seq_len))
        s = (_grouped(q[:, :, rows].to(cdt), kv_heads) @ k_c.transpose(-1, -2)).flatten(1, 2) * scale
        keep = _token_block_mask(blocks, rows, seq_len, config)
        s = s.masked_fill(~keep, -math.inf)
        m = s.amax(-1, keepdim=True)
        p = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
        denom = p.sum(-1, keepdim=True)
        o = _grouped(p, kv_heads) @ v_c
        o = o.flatten(1, 2) / torch.where(denom > 0, denom, torch.ones_like(denom))
        out[:, :, rows] = o.to(out_dtype)
    return out


def kept_attention_mass(q: torch.Tensor, k: torch.Tensor, block_mask: torch.Tensor,
                        config: SaleConfig) -> torch.Tensor:
    """Share of each row's exact causal softmax mass inside the kept blocks: [B, Hq, N]."""
    batch, hq, seq_len, head_dim = q.shape
    cdt, scale = compute_dtype(q), config.scale_for(head_dim)
    k_c = k.to(cdt)[:, :, None]
    out = []
    step = _rows_per_slab(batch, hq, seq_len, config.block_q)
    for start in range(0, seq_len, step):
        rows = slice(start, min(start + step, seq_len))
        s = (_grouped(q[:, :, rows].to(cdt), k.shape[1]) @ k_c.transpose(-1, -2)).flatten(1, 2) * scale
        causal = _token_block_mask(torch.ones_like(block_mask[:1, :1]), rows, seq_len, config)
        p = torch.softmax(s.masked_fill(~causal, -math.inf), dim=-1)
        keep = _token_block_mask(block_mask, rows, seq_len, config)
        out.append((p * keep).sum(-1))
    return torch.cat(out, dim=-1)
