"""Stage 3 on the GPU: block-sparse causal flash attention over the kept key blocks.

One program per (query block, query head), longest rows first. It walks the query block's kept list
(ascending key-block indices), gathering TB kept blocks of block_k keys into one BLOCK_N = TB *
block_k tile (TB=1 by default: a 32-key step, whatever the kept pattern). Kept blocks wholly before the query
block's first row need no masking and run in the main loop; the last few (the diagonal blocks, and
a ragged remainder) run in a masked tail loop. GQA reads K and V of the shared kv head, never
repeated. With every causal block kept it is the project's dense Triton attention.
"""
import math

import torch
import triton
import triton.language as tl

from ..blocks import KeptBlocks, causal_blocks, mask_to_kept, num_blocks
from ._common import interpreting, pow2


@triton.jit
def _attend_tile(acc, m_i, l_i, q, k_base, v_base, idx_base, p0, count, rows, stride_kn, stride_vn, N,
                 scale_log2e, d, BK: tl.constexpr, TB: tl.constexpr, MASKED: tl.constexpr,
                 INTERPRET: tl.constexpr, FOLD: tl.constexpr):
    """One step over TB kept blocks gathered by pointer loads into one BLOCK_N = TB * BK key tile."""
    BLOCK_N: tl.constexpr = TB * BK
    slots = p0 + tl.arange(0, TB)
    if MASKED:
        blk = tl.load(idx_base + slots, mask=slots < count, other=0)
    else:
        blk = tl.load(idx_base + slots)
    keys = tl.reshape(blk[:, None] * BK + tl.arange(0, BK)[None, :], (BLOCK_N,))
    if MASKED:
        slot_ok = tl.reshape(tl.broadcast_to((slots < count)[:, None], (TB, BK)), (BLOCK_N,))
        key_ok = slot_ok & (keys < N)
        k = tl.load(k_base + keys[:, None] * stride_kn + d[None, :], mask=key_ok[:, None], other=0.0)
        v = tl.load(v_base + keys[:, None] * stride_vn + d[None, :], mask=key_ok[:, None], other=0.0)
    else:
        k = tl.load(k_base + keys[:, None] * stride_kn + d[None, :])
        v = tl.load(v_base + keys[:, None] * stride_vn + d[None, :])
    s = _scores(q, k, INTERPRET)
    if MASKED:
        s = tl.where(key_ok[None, :] & (keys[None, :] <= rows[:, None]), s, float("-inf"))
    if FOLD:  # the softmax scale inside exp2's argument: one FFMA per score instead of FMUL + FADD
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * scale_log2e)
        m_use = _empty_rows_at_zero(m_new, MASKED)
        p = tl.exp2(s * scale_log2e - m_use[:, None])
    else:
        s = s * scale_log2e
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_use = _empty_rows_at_zero(m_new, MASKED)
        p = tl.exp2(s - m_use[:, None])
    alpha = tl.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = _accumulate(acc * alpha[:, None], p, v, INTERPRET)
    return acc, m_new, l_i


@triton.jit
def _scores(q, k, INTERPRET: tl.constexpr):
    if INTERPRET:  # the interpreter's dot multiplies the raw bits of 16-bit floats
        return tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)))
    return tl.dot(q, tl.trans(k))


@triton.jit
def _accumulate(acc, p, v, INTERPRET: tl.constexpr):
    if INTERPRET:
        return acc + tl.dot(p, v.to(tl.float32))
    return tl.dot(p.to(v.dtype), v, acc)


@triton.jit
def _empty_rows_at_zero(m_new, MASKED: tl.constexpr):
    """The row maximum to subtract: 0 for rows with no key yet (their maximum stays -inf, p = 0, l = 0)."""
    if MASKED:
        return tl.where(m_new == float("-inf"), 0.0, m_new)
    return m_new


@triton.jit
def _attend_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, counts_ptr, idx_ptr,
    N, HQ, GROUP, NQB, NKB, scale_log2e,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
    HEAD_DIM: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, TB: tl.constexpr, DIAG: tl.constexpr,
    INTERPRET: tl.constexpr, HEADS_FIRST: tl.constexpr, FOLD: tl.constexpr,
):
    if HEADS_FIRST:  # launch order: the longest rows of every head first
        qb = NQB - 1 - tl.program_id(1)
        bh = tl.program_id(0)
    else:            # longest rows first within each head
        qb = NQB - 1 - tl.program_id(0)
        bh = tl.program_id(1)
    b = bh // HQ
    h = bh % HQ
    kvh = h // GROUP
    rows = qb * BQ + tl.arange(0, BQ)
    row_ok = rows < N
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + rows[:, None] * stride_qn + d[None, :],
                mask=row_ok[:, None], other=0.0)
    k_base = k_ptr + b * stride_kb + kvh * stride_kh
    v_base = v_ptr + b * stride_vb + kvh * stride_vh
    count = tl.load(counts_ptr + bh * NQB + qb)
    idx_base = idx_ptr + (bh * NQB + qb) * NKB
    # Kept blocks at or after the first row need the causal mask; they are the last (at most DIAG) entries.
    tail_slots = count - DIAG + tl.arange(0, DIAG)
    tail = tl.load(idx_base + tail_slots, mask=tail_slots >= 0, other=-1)
    n_diag = tl.sum((tail * BK >= qb * BQ).to(tl.int32), axis=0)
    n_full = ((count - n_diag) // TB) * TB
    m_i = tl.full((BQ,), float("-inf"), tl.float32)
    l_i = tl.zeros((BQ,), tl.float32)
    acc = tl.zeros((BQ, HEAD_DIM), tl.float32)
    for p0 in range(0, n_full, TB):
        acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_base, v_base, idx_base, p0, count, rows, stride_kn,
                                     stride_vn, N, scale_log2e, d, BK, TB, False, INTERPRET, FOLD)
    for p0 in range(n_full, count, TB):
        acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_base, v_base, idx_base, p0, count, rows, stride_kn,
                                     stride_vn, N, scale_log2e, d, BK, TB, True, INTERPRET, FOLD)
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(o_ptr + b * stride_ob + h * stride_oh + rows[:, None] * stride_on + d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


# Tile configurations kept as data: tb kept blocks gathered per step into one BLOCK_N = tb * block_k
# tile, warps, stages, heads_first launch order, maxnreg register cap (None: the compiler's choice), fold
# (the softmax scale inside exp2's argument: one FFMA per score instead of FMUL + FADD; 1-2% faster from
# 32K for 64-row blocks, within noise at 16K, NOTES.md run 24; the 128-row tile keeps the measured form). tb=1 needs half the shared memory of tb=2 (49 KB instead of 83 KB), so 3
# programs fit per SM instead of 2; tb=2 took 2-14% longer at 16K-128K (run 19). TMA descriptor loads
# (one box per kept block) and Triton's warp specialization were slower or did not compile (run 24).
_TB2 = dict(tb=2, warps=4, stages=3, heads_first=False, maxnreg=None, fold=True)
_TB1 = {**_TB2, "tb": 1, "stages": 4}
ATTEND_CONFIGS = {
    "default": _TB1,
    "unfolded": {**_TB1, "fold": False},   # the default until run 24
    "tb2": _TB2,
    "heads_first": {**_TB1, "heads_first": True},
    "tb1_s3": {**_TB2, "tb": 1},
    "tb1_r128": {**_TB1, "maxnreg": 128},
    "tb4_w4": {**_TB2, "tb": 4},
    "tb4_w8": {**_TB2, "tb": 4, "warps": 8},
    # the default for 128-row mask blocks (SaleConfig(block_q=128)): 128-key tiles on two warpgroups,
    # 0.62-0.71 of cuDNN per block from 64K (NOTES.md, runs 20-21)
    "bq128": {**_TB2, "tb": 4, "warps": 8, "fold": False},
}
DEFAULT_TILE = {64: "default", 128: "bq128"}


def attend_triton(q, k, v, mask, config, kept: KeptBlocks | None = None, tile: str | None = None):
    """Triton version of ``reference.attention_reference`` over the blocks of ``mask`` (or of ``kept``,
    the selection kernel's compact lists, which then must describe the same causal blocks)."""
    batch, hq, seq_len, head_dim = q.shape
    bq, bk = config.block_q, config.block_k
    if bq % bk or bq & (bq - 1) or bk & (bk - 1) or bk < 16:
        raise ValueError(f"the triton backend needs power-of-two block_k >= 16 dividing block_q, got "
                         f"block_q={bq}, block_k={bk}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in the head dimension (stride(-1) == 1)")
    if kept is None:  # blocks above the diagonal are ignored, as in the reference
        kept = mask_to_kept(mask & causal_blocks(seq_len, config, mask.device))
    cfg = ATTEND_CONFIGS[tile or DEFAULT_TILE.get(bq, "default")]
    tb, num_warps, num_stages, heads_first, maxnreg = cfg["tb"], cfg["warps"], cfg["stages"], cfg["heads_first"], cfg["maxnreg"]
    if bq >= 128:  # a 128-row query block: two warpgroups, as in flash attention's 128-row tiles
        num_warps = max(num_warps, 8)
    if interpreting():
        num_stages = 1
    nqb, nkb = num_blocks(seq_len, bq), num_blocks(seq_len, bk)
    out = torch.empty_like(q)
    grid = (batch * hq, nqb) if heads_first else (nqb, batch * hq)
    _attend_kernel[grid](
        q, k, v, out, kept.counts, kept.indices,
        seq_len, hq, hq // k.shape[1], nqb, nkb, config.scale_for(head_dim) * math.log2(math.e),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        HEAD_DIM=head_dim, BQ=bq, BK=bk, TB=tb, DIAG=pow2(bq // bk), INTERPRET=interpreting(), HEADS_FIRST=heads_first,
        FOLD=cfg["fold"],
        num_warps=num_warps, num_stages=num_stages, **({"maxnreg": maxnreg} if maxnreg and not interpreting() else {}))
    return out


def dense_kept(batch: int, num_q_heads: int, seq_len: int, config, device) -> KeptBlocks:
    """Every causal block kept: the kept lists of the project's dense Triton attention."""
    mask = causal_blocks(seq_len, config, device).expand(batch, num_q_heads, -1, -1).contiguous()
    return mask_to_kept(mask)
