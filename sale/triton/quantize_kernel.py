"""Stage 1 on the GPU: smoothing and 4-bit quantization of Q (or K), fused with the q_mean . k_s term;
and the 8-bit block quantization of the computation pass's q . k (``SaleConfig.int8_qk``).

One program quantizes BLOCK_ROWS rows of one head: subtract the sequence mean, take the amax of each
row (per token) or of each group of rows (per group), x_hat = round_half_even(x * (7 / amax)),
scale = amax / 7. For K it also writes qmk[h, j] = q_mean[h] . k_s[j] for the GROUP query heads that
share the kv head, so the selection pass reads one float per key instead of recomputing it.
"""
import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from ..reference import QuantizedQK
from ._common import interpreting, pow2

@triton.jit
def _quantize_rows_kernel(
    x_ptr, mean_ptr, x_hat_ptr, scale_ptr, qmean_ptr, qmk_ptr,
    N, H, GROUP,
    stride_xb, stride_xh, stride_xn,
    HEAD_DIM: tl.constexpr, BLOCK_ROWS: tl.constexpr, ROW_GROUP: tl.constexpr,
    GROUP_P2: tl.constexpr, WITH_QMK: tl.constexpr, EXACT_DIV: tl.constexpr,
):
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = pid_n * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    d = tl.arange(0, HEAD_DIM)
    valid = rows < N
    x = tl.load(x_ptr + b * stride_xb + h * stride_xh + rows[:, None] * stride_xn + d[None, :],
                mask=valid[:, None], other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + bh * HEAD_DIM + d)
    xs = tl.where(valid[:, None], x - mean[None, :], 0.0)
    amax = tl.max(tl.abs(xs), axis=1)
    if ROW_GROUP > 1:  # one scale per ROW_GROUP rows (groups never straddle programs)
        g = tl.max(tl.reshape(amax, (BLOCK_ROWS // ROW_GROUP, ROW_GROUP)), axis=1)
        amax = tl.reshape(tl.broadcast_to(g[:, None], (BLOCK_ROWS // ROW_GROUP, ROW_GROUP)), (BLOCK_ROWS,))
    if EXACT_DIV:
        inv = tl.math.div_rn(tl.full((BLOCK_ROWS,), 7.0, tl.float32), amax)
    else:  # the interpreter's div_rn is not correctly rounded; its plain division is
        inv = 7.0 / amax
    inv = tl.where(amax > 0, inv, 0.0)
    y = xs * inv[:, None]
    if EXACT_DIV:  # on the GPU: rint of the rounded product (an add here could be fused into an FMA)
        x_hat = libdevice.rint(y)
    else:  # the interpreter has no libdevice.rint; numpy never fuses, so the exact magic-number add works
        x_hat = (y + 12582912.0) - 12582912.0
    out = bh * N * HEAD_DIM + rows[:, None] * HEAD_DIM + d[None, :]
    tl.store(x_hat_ptr + out, x_hat.to(tl.int8), mask=valid[:, None])
    tl.store(scale_ptr + bh * N + rows, amax / 7.0, mask=valid)
    if WITH_QMK:  # qmk[b, h*GROUP + g, j] = q_mean[b, h*GROUP + g] . k_s[j], one query head at a time
        for g in tl.static_range(GROUP_P2):
            if g < GROUP:
                qm = tl.load(qmean_ptr + (b * H * GROUP + h * GROUP + g) * HEAD_DIM + d)
                qmk = tl.sum(xs * qm[None, :], axis=1)
                tl.store(qmk_ptr + (b * H * GROUP + h * GROUP + g) * N + rows, qmk, mask=valid)


def _launch(x, mean, group_rows, qmean=None, group=1):
    batch, heads, seq_len, head_dim = x.shape
    x_hat = torch.empty((batch, heads, seq_len, head_dim), dtype=torch.int8, device=x.device)
    scale = torch.empty((batch, heads, seq_len), dtype=torch.float32, device=x.device)
    with_qmk = qmean is not None
    qmk = torch.empty((batch, heads * group, seq_len), dtype=torch.float32, device=x.device) if with_qmk else scale
    block_rows = max(pow2(group_rows), 64 if not interpreting() else 16)
    grid = (triton.cdiv(seq_len, block_rows), batch * heads)
    _quantize_rows_kernel[grid](
        x, mean, x_hat, scale, qmean if with_qmk else mean, qmk,
        seq_len, heads, group,
        x.stride(0), x.stride(1), x.stride(2),
        HEAD_DIM=head_dim, BLOCK_ROWS=block_rows, ROW_GROUP=group_rows, GROUP_P2=pow2(group),
        WITH_QMK=with_qmk, EXACT_DIV=not interpreting(), num_warps=4)
    return x_hat, scale, (qmk if with_qmk else None)


def quantize_triton(q: torch.Tensor, k: torch.Tensor, config) -> QuantizedQK:
    """Triton version of ``reference.quantize_reference`` (same layout and results, ties aside)."""
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("q and k must be contiguous in the head dimension (stride(-1) == 1)")
    per_group = config.granularity == "per_group"
    for name, size in (("q_group_size", config.q_group_size), ("k_group_size", config.k_group_size)):
        if per_group and size & (size - 1):
            raise ValueError(f"SaleConfig.{name} must be a power of two for the triton backend, got {size}")
    # The sequence means are plain column reductions: PyTorch runs them at memory bandwidth.
    q_mean = q.mean(2, dtype=torch.float32).contiguous()
    k_mean = k.mean(2, dtype=torch.float32).contiguous()
    group = q.shape[1] // k.shape[1]
    q_hat, q_scale, _ = _launch(q, q_mean, config.q_group_size if per_group else 1)
    k_hat, k_scale, qmk = _launch(k, k_mean, config.k_group_size if per_group else 1, qmean=q_mean, group=group)
    return QuantizedQK(q_hat, q_scale, k_hat, k_scale, qmk, q_mean, k_mean)


@triton.jit
def _quantize_int8_kernel(x_ptr, mean_ptr, x_hat_ptr, scale_ptr, N, H, NS, stride_xb, stride_xh, stride_xn,
                          HEAD_DIM: tl.constexpr, BLOCK_ROWS: tl.constexpr, PER_ROW: tl.constexpr,
                          SMOOTH: tl.constexpr, EXACT_DIV: tl.constexpr):
    """BLOCK_ROWS rows of one head: x_s = x - mean (SMOOTH), the amax of each row (PER_ROW) or of the
    whole block, 8-bit round half even; NS scales per head."""
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    rows = blk * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    d = tl.arange(0, HEAD_DIM)
    valid = rows < N
    x = tl.load(x_ptr + (bh // H) * stride_xb + (bh % H) * stride_xh + rows[:, None] * stride_xn + d[None, :],
                mask=valid[:, None], other=0.0).to(tl.float32)
    if SMOOTH:
        x = tl.where(valid[:, None], x - tl.load(mean_ptr + bh * HEAD_DIM + d)[None, :], 0.0)
    amax = tl.max(tl.abs(x), axis=1)
    if not PER_ROW:
        amax = tl.full((BLOCK_ROWS,), 0.0, tl.float32) + tl.max(amax, axis=0)
    nonzero = tl.where(amax > 0, amax, 1.0)
    if EXACT_DIV:
        inv = tl.math.div_rn(tl.full((BLOCK_ROWS,), 127.0, tl.float32), nonzero)
    else:
        inv = 127.0 / nonzero
    y = x * tl.where(amax > 0, inv, 0.0)[:, None]
    if EXACT_DIV:  # rint of the rounded product, as the 4-bit kernel (an add could be fused into an FMA)
        x_hat = libdevice.rint(y)
    else:
        x_hat = (y + 12582912.0) - 12582912.0
    tl.store(x_hat_ptr + bh * N * HEAD_DIM + rows[:, None] * HEAD_DIM + d[None, :], x_hat.to(tl.int8),
             mask=valid[:, None])
    scale = tl.where(amax > 0, amax / 127.0, 1.0)
    if PER_ROW:
        tl.store(scale_ptr + bh * NS + rows, scale, mask=valid)
    else:
        tl.store(scale_ptr + bh * NS + blk, tl.max(scale, axis=0))


def quantize_int8_triton(x: torch.Tensor, block_rows: int, mean: torch.Tensor | None = None):
    """Triton version of ``reference.quantize_int8_blocks``: (int8 x_hat [B, H, N, D] contiguous, float32
    scale [B, H, ceil(N / block_rows)]); block_rows=1 is one scale per row."""
    batch, heads, seq_len, head_dim = x.shape
    per_row = block_rows == 1
    rows = 64 if per_row else pow2(block_rows)
    if not per_row and rows != block_rows:
        raise ValueError(f"block_rows must be 1 or a power of two, got {block_rows}")
    ns = triton.cdiv(seq_len, block_rows)
    x_hat = torch.empty((batch, heads, seq_len, head_dim), dtype=torch.int8, device=x.device)
    scale = torch.empty((batch, heads, ns), dtype=torch.float32, device=x.device)
    _quantize_int8_kernel[(triton.cdiv(seq_len, rows), batch * heads)](
        x, mean if mean is not None else scale, x_hat, scale, seq_len, heads, ns, x.stride(0), x.stride(1),
        x.stride(2), HEAD_DIM=head_dim, BLOCK_ROWS=rows, PER_ROW=per_row, SMOOTH=mean is not None,
        EXACT_DIV=not interpreting(), num_warps=4 if rows <= 64 else 8)
    return x_hat, scale
