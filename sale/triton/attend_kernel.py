"""Stage 3 on the GPU: block-sparse causal flash attention over the kept key blocks.

One program per (query block, query head), longest rows first. Two forms, picked by tile:

- split (the default): a converter kernel sorts each query block's kept list into steps
  (``blocks.KeptSteps``): full pairs (key blocks 2c and 2c+1 both kept) run as one 2 * block_k key step
  copied by TMA; lone kept blocks run two per 2 * block_k key step (tiles with lone_pairs; else one per
  block_k step), gathered by pointers; the pairs that reach the query block's first row run last with
  the causal mask. Exactly the kept blocks are
  computed, in half as many steps where kept blocks come in pairs: each step carries a fixed cost
  (accumulator rescale, addresses) that held 32-key steps to ~0.6 of cuDNN (docs/kernels.md).
- gathered: the kept list as it is, TB kept blocks gathered by pointer loads into one BLOCK_N = TB *
  block_k tile per step (TB=1: a 32-key step, whatever the kept pattern); kept blocks wholly before the
  query block's first row run unmasked, the last few (the diagonal blocks, a ragged remainder) in a
  masked tail loop.

GQA reads K and V of the shared kv head, never repeated. With every causal block kept either form is
the project's dense Triton attention.
"""
import math

import torch
import triton
import triton.language as tl

from ..blocks import KeptBlocks, KeptSteps, UnionSteps, causal_blocks, mask_to_kept, num_blocks
from ._common import interpreting, pow2


@triton.jit
def _attend_tile(acc, m_i, l_i, q, k_base, v_base, idx_base, p0, count, rows, stride_kn, stride_vn, N,
                 scale_log2e, d, ks_base, BK: tl.constexpr, TB: tl.constexpr, MASKED: tl.constexpr,
                 INTERPRET: tl.constexpr, QK8: tl.constexpr):
    """One step over TB kept blocks gathered by pointer loads into one BLOCK_N = TB * BK key tile; with
    QK8, int8 q and k and each block's K scale (one per 2 * BK keys, ks_base) applied per column."""
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
    s = _scores(q, k, INTERPRET, QK8)
    if QK8:
        if TB == 1:
            scale_log2e = scale_log2e * tl.load(ks_base + tl.sum(blk, axis=0) // 2)
        else:
            ks = tl.load(ks_base + blk // 2)
            s = s * tl.reshape(tl.broadcast_to(ks[:, None], (TB, BK)), (BLOCK_N,))[None, :]
    if MASKED:
        s = tl.where(key_ok[None, :] & (keys[None, :] <= rows[:, None]), s, float("-inf"))
    return _online_softmax(acc, m_i, l_i, s, v, scale_log2e, MASKED, INTERPRET, QK8 != 0)


@triton.jit
def _online_softmax(acc, m_i, l_i, s, v, scale_log2e, MASKED: tl.constexpr, INTERPRET: tl.constexpr,
                    ROW_SCALE: tl.constexpr):
    """Flash attention's update by one key tile of raw scores s and values v, the softmax scale inside
    exp2's argument (one FFMA per score instead of FMUL + FADD). ROW_SCALE: scale_log2e holds one positive
    scale per row (int8 q . k: each query's scale), still one FFMA per score."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1) * scale_log2e)
    m_use = _empty_rows_at_zero(m_new, MASKED)
    if ROW_SCALE:
        p = tl.exp2(s * scale_log2e[:, None] - m_use[:, None])
    else:
        p = tl.exp2(s * scale_log2e - m_use[:, None])
    alpha = tl.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = _accumulate(acc * alpha[:, None], p, v, INTERPRET)
    return acc, m_new, l_i


@triton.jit
def _scores(q, k, INTERPRET: tl.constexpr, QK8: tl.constexpr):
    """q . k^T in float32; QK8 (int8 q and k): the int32 sums (|s| <= 128 * 127^2 < 2^22, exact in float32)
    converted by the conversion instruction."""
    if INTERPRET:  # the interpreter's dot multiplies the raw bits of 16-bit floats; int8 sums are exact
        return tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)))
    return tl.dot(q, tl.trans(k)).to(tl.float32)


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
def _query_block(q_ptr, qb, bh, N, HQ, GROUP, stride_qb, stride_qh, stride_qn,
                 BQ: tl.constexpr, HEAD_DIM: tl.constexpr):
    """A program's batch, query head, kv head (GQA), rows and their queries [BQ, HEAD_DIM] (0 past N)."""
    b = bh // HQ
    h = bh % HQ
    rows = qb * BQ + tl.arange(0, BQ)
    d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + rows[:, None] * stride_qn + d[None, :],
                mask=(rows < N)[:, None], other=0.0)
    return b, h, h // GROUP, rows, d, q


@triton.jit
def _store_rows(o_ptr, acc, l_i, b, h, rows, d, N, stride_ob, stride_oh, stride_on):
    """acc / l_i for the rows before N; a row with no key (l_i = 0) is written as zeros."""
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(o_ptr + b * stride_ob + h * stride_oh + rows[:, None] * stride_on + d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=(rows < N)[:, None])


@triton.jit
def _attend_pair(acc, m_i, l_i, q, desc_k, desc_v, b, kvh, code, rows, scale_log2e,
                 BK: tl.constexpr, HEAD_DIM: tl.constexpr, MASKED: tl.constexpr, INTERPRET: tl.constexpr,
                 QK8: tl.constexpr):
    """One step over the 2 * BK keys of pair code >> 2, by TMA copies (zero-filled past N); the columns of
    a half whose flag bit is clear, and with MASKED the keys after each row, score -inf. scale_log2e is
    this step's score scale (times the pair's K scale with QK8)."""
    PK: tl.constexpr = 2 * BK
    key0 = (code >> 2) * PK
    k = tl.reshape(desc_k.load([b, kvh, key0, 0]), (PK, HEAD_DIM))
    s = _scores(q, k, INTERPRET, QK8)
    half_kept = ((code >> (tl.arange(0, PK) // BK)) & 1) != 0
    if MASKED:
        keys = key0 + tl.arange(0, PK)
        s = tl.where(half_kept[None, :] & (keys[None, :] <= rows[:, None]), s, float("-inf"))
    else:
        s = tl.where(half_kept[None, :], s, float("-inf"))
    v = tl.reshape(desc_v.load([b, kvh, key0, 0]), (PK, HEAD_DIM))
    return _online_softmax(acc, m_i, l_i, s, v, scale_log2e, MASKED, INTERPRET, QK8 != 0)


@triton.jit
def _attend_lone_pair(acc, m_i, l_i, q, k_base, v_base, codes, d, stride_kn, stride_vn, scale_log2e, ks_base,
                      BK: tl.constexpr, INTERPRET: tl.constexpr, QK8: tl.constexpr):
    """One 2 * BK key step over the lone blocks of codes[0] and codes[-1] (any two key blocks), gathered by
    pointers; with QK8 each half takes its own K scale (a per-column multiply)."""
    code = tl.load(codes - tl.arange(0, 2))
    blk = (code >> 2) * 2 + ((code & 3) >> 1)
    keys = tl.reshape(blk[:, None] * BK + tl.arange(0, BK)[None, :], (2 * BK,))
    s = _scores(q, tl.load(k_base + keys[:, None] * stride_kn + d[None, :]), INTERPRET, QK8)
    v = tl.load(v_base + keys[:, None] * stride_vn + d[None, :])
    if QK8:
        ks = tl.load(ks_base + (code >> 2))
        s = s * tl.reshape(tl.broadcast_to(ks[:, None], (2, BK)), (2 * BK,))[None, :]
    return _online_softmax(acc, m_i, l_i, s, v, scale_log2e, False, INTERPRET, QK8 != 0)


@triton.jit
def _attend_steps_kernel(
    q_ptr, k_ptr, v_ptr, desc_k2, desc_v2, o_ptr, counts_ptr, steps_ptr, qs_ptr, ks_ptr,
    N, HQ, GROUP, NQB, NPB, scale_log2e,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
    HEAD_DIM: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, INTERPRET: tl.constexpr, QK8: tl.constexpr,
    LONE_PAIRS: tl.constexpr,
):
    """The split form: full pairs of kept blocks in 2 * BK key steps (TMA), lone kept blocks in BK key
    steps (gathered by pointers, as the gathered form), the pairs that reach the first row (masked) last;
    exactly the kept blocks are computed. QK8: int8 q and k, scales per query row (qs_ptr) and per 2 * BK
    keys (ks_ptr): every step spans one K scale block, so a step's score scale is one value per row."""
    qb = NQB - 1 - tl.program_id(0)
    bh = tl.program_id(1)
    b, h, kvh, rows, d, q = _query_block(q_ptr, qb, bh, N, HQ, GROUP, stride_qb, stride_qh, stride_qn, BQ, HEAD_DIM)
    row = bh * NQB + qb
    n_full = tl.load(counts_ptr + row * 3)
    n_single = tl.load(counts_ptr + row * 3 + 1)
    n_tail = tl.load(counts_ptr + row * 3 + 2)
    step_base = steps_ptr + row * NPB
    back = step_base + NPB - 1   # lone blocks, then the tail pairs, stored from the end backwards
    m_i = tl.full((BQ,), float("-inf"), tl.float32)
    l_i = tl.zeros((BQ,), tl.float32)
    acc = tl.zeros((BQ, HEAD_DIM), tl.float32)
    ks_base = ks_ptr
    if QK8:  # one scale per query row, one per 2 * BK keys
        scale_log2e = scale_log2e * tl.load(qs_ptr + bh * N + rows, mask=rows < N, other=1.0)
        ks_base = ks_ptr + (b * (HQ // GROUP) + kvh) * NPB
    c = scale_log2e
    for j in range(0, n_full):
        # flags 3 (both halves kept): the half mask folds away in compilation; built from the loaded index
        # anyway, which keeps Triton 3.6's pipeliner on its faster register-prefetch form of this load
        code = tl.load(step_base + j) * 4 + 3
        if QK8:
            c = scale_log2e * tl.load(ks_base + (code >> 2))
        acc, m_i, l_i = _attend_pair(acc, m_i, l_i, q, desc_k2, desc_v2, b, kvh, code, rows, c,
                                     BK, HEAD_DIM, False, INTERPRET, QK8)
    k_base = k_ptr + b * stride_kb + kvh * stride_kh
    v_base = v_ptr + b * stride_vb + kvh * stride_vh
    first_single = 0
    if LONE_PAIRS:  # two lone blocks per 2 * BK key step, gathered by pointers; an odd last one alone below
        first_single = (n_single // 2) * 2
        for j in range(0, first_single, 2):
            acc, m_i, l_i = _attend_lone_pair(acc, m_i, l_i, q, k_base, v_base, back - j, d, stride_kn, stride_vn,
                                              scale_log2e, ks_base, BK, INTERPRET, QK8)
    for j in range(first_single, n_single):
        code = tl.load(back - j)
        keys = ((code >> 2) * 2 + ((code & 3) >> 1)) * BK + tl.arange(0, BK)
        s = _scores(q, tl.load(k_base + keys[:, None] * stride_kn + d[None, :]), INTERPRET, QK8)
        v = tl.load(v_base + keys[:, None] * stride_vn + d[None, :])
        if QK8:
            c = scale_log2e * tl.load(ks_base + (code >> 2))
        acc, m_i, l_i = _online_softmax(acc, m_i, l_i, s, v, c, False, INTERPRET, QK8 != 0)
    for j in range(n_single, n_single + n_tail):
        code = tl.load(back - j)
        if QK8:
            c = scale_log2e * tl.load(ks_base + (code >> 2))
        acc, m_i, l_i = _attend_pair(acc, m_i, l_i, q, desc_k2, desc_v2, b, kvh, code, rows, c,
                                     BK, HEAD_DIM, True, INTERPRET, QK8)
    _store_rows(o_ptr, acc, l_i, b, h, rows, d, N, stride_ob, stride_oh, stride_on)


@triton.jit
def _kept_to_steps_kernel(counts_ptr, idx_ptr, step_counts_ptr, steps_ptr, NKB, NPB, NQB,
                          BQ: tl.constexpr, BK: tl.constexpr, CHUNK: tl.constexpr):
    """One kept list (ascending key blocks) -> the split form's steps, one program per list: full pairs
    (both blocks kept, every key before the first row) as pair indices from the front; lone blocks, then
    the pairs reaching the first row, as pair codes 4 * pair + flags from the end backwards."""
    row = tl.program_id(0).to(tl.int64)
    first_row = (row % NQB) * BQ
    count = tl.load(counts_ptr + row)
    idx_base = idx_ptr + row * NKB
    front = steps_ptr + row * NPB
    back = front + NPB - 1
    n_front = 0
    n_back = 0
    n_tail = 0
    for c0 in range(0, count, CHUNK):
        slot = c0 + tl.arange(0, CHUNK)
        ok = slot < count
        cur = tl.load(idx_base + slot, mask=ok, other=0)
        prev = tl.load(idx_base + slot - 1, mask=ok & (slot > 0), other=-2)   # -2 >> 1 is no pair
        nxt = tl.load(idx_base + slot + 1, mask=slot + 1 < count, other=-2)
        pair = cur >> 1
        starts = ok & ((prev >> 1) != pair)
        flags = (1 << (cur & 1)) | tl.where((nxt >> 1) == pair, 1 << (nxt & 1), 0)
        tail = (pair + 1) * (2 * BK) > first_row
        full = starts & (flags == 3) & ~tail
        rest = starts & ~full
        tl.store(front + n_front + tl.cumsum(full.to(tl.int32), axis=0) - 1, pair, mask=full)
        tl.store(back - (n_back + tl.cumsum(rest.to(tl.int32), axis=0) - 1), pair * 4 + flags, mask=rest)
        n_front += tl.sum(full.to(tl.int32), axis=0)
        n_back += tl.sum(rest.to(tl.int32), axis=0)
        n_tail += tl.sum((rest & tail).to(tl.int32), axis=0)
    tl.store(step_counts_ptr + row * 3, n_front)
    tl.store(step_counts_ptr + row * 3 + 1, n_back - n_tail)
    tl.store(step_counts_ptr + row * 3 + 2, n_tail)


def kept_to_steps(kept: KeptBlocks, config) -> KeptSteps:
    """The split form's steps (``blocks.KeptSteps``) from the selection kernel's kept lists."""
    counts = kept.counts.contiguous()
    indices = kept.indices.contiguous()
    nkb = indices.shape[-1]
    npb = -(-nkb // 2)
    step_counts = torch.empty(*counts.shape, 3, dtype=torch.int32, device=counts.device)
    steps = torch.empty(*indices.shape[:-1], npb, dtype=torch.int32, device=indices.device)
    _kept_to_steps_kernel[(counts.numel(),)](counts, indices, step_counts, steps, nkb, npb, counts.shape[-1],
                                             BQ=config.block_q, BK=config.block_k, CHUNK=min(1024, pow2(nkb)))
    return KeptSteps(counts=step_counts, steps=steps)


@triton.jit
def _union_positions(rank, n_steps, s_both, excess, own_excess, mixed_base, leftover, SLOTS: tl.constexpr,
                     GROUP: tl.constexpr, SPLIT: tl.constexpr):
    """Code positions of one group's blocks (blocks.UnionSteps): its full steps in the ring, the rest in the
    mixed steps after `leftover` earlier leftovers."""
    step = rank // SLOTS
    slot = rank % SLOTS
    if GROUP == 0:
        ring = excess + step
    elif SPLIT:   # alternating steps interleaved by halves, block 2j's half first
        ring = tl.where(step < own_excess, step, excess + s_both + 2 * (step - own_excess) + slot // (SLOTS // 2))
        slot = tl.where(step < own_excess, slot, (GROUP - 1) * (SLOTS // 2) + slot % (SLOTS // 2))
    else:
        ring = tl.where(step < own_excess, step, excess + s_both + 2 * (step - own_excess) + GROUP - 1)
    return tl.where(step < n_steps, ring * SLOTS + slot, mixed_base + leftover + rank - n_steps * SLOTS)


@triton.jit
def _union_groups(plane, kb, NKB, first0, first1, BK: tl.constexpr):
    """Key blocks kb's flags (bit 0: block 2j keeps it, bit 1: block 2j + 1 does) and groups (blocks.UnionSteps):
    "both", "only 0", "only 1", mixed."""
    flag = tl.load(plane + kb, mask=kb < NKB, other=0).to(tl.int32)
    both = (flag == 3) & ((kb + 1) * BK <= first0)
    only0 = (flag == 1) & ((kb + 1) * BK <= first0)
    only1 = (flag == 2) & ((kb + 1) * BK <= first1)
    return flag, both, only0, only1, (flag > 0) & ~both & ~only0 & ~only1


@triton.jit
def _kept_to_union_kernel(counts_ptr, idx_ptr, plane_ptr, union_counts_ptr, codes_ptr, NKB, NQB, NPAIR, NCODE,
                          BQ: tl.constexpr, BK: tl.constexpr, SLOTS: tl.constexpr, CHUNK: tl.constexpr,
                          SPLIT: tl.constexpr):
    """The kept lists of query blocks 2j and 2j + 1 -> their union ring (``blocks.UnionSteps``), one program
    per pair: both lists are first written as flags into a row of key blocks (plane, int8 [NKB] per program),
    which is then read in order, twice: group sizes, then each block's position."""
    pid = tl.program_id(0).to(tl.int64)
    bh = pid // NPAIR
    qb0 = 2 * (pid % NPAIR)
    first0 = qb0 * BQ
    first1 = first0 + BQ
    plane = plane_ptr + pid * NKB
    lane = tl.arange(0, CHUNK)
    for k0 in range(0, NKB, CHUNK):
        tl.store(plane + k0 + lane, tl.zeros([CHUNK], tl.int8), mask=k0 + lane < NKB)
    tl.debug_barrier()   # the flags are written and read by different threads of the program
    row0 = bh * NQB + qb0
    count0 = tl.load(counts_ptr + row0)
    for c0 in range(0, count0, CHUNK):
        blk = tl.load(idx_ptr + row0 * NKB + c0 + lane, mask=c0 + lane < count0, other=0)
        tl.store(plane + blk, tl.full([CHUNK], 1, tl.int8), mask=(c0 + lane < count0) & (blk * BK < first1))
    tl.debug_barrier()
    count1 = tl.load(counts_ptr + row0 + 1, mask=qb0 + 1 < NQB, other=0)
    for c0 in range(0, count1, CHUNK):
        blk = tl.load(idx_ptr + (row0 + 1) * NKB + c0 + lane, mask=c0 + lane < count1, other=0)
        ok = (c0 + lane < count1) & (blk * BK < first1 + BQ)
        tl.store(plane + blk, tl.load(plane + blk, mask=ok, other=0) | 2, mask=ok)
    tl.debug_barrier()
    n_both = 0
    n_only0 = 0
    n_only1 = 0
    n_mixed = 0
    for k0 in range(0, NKB, CHUNK):
        flag, both, only0, only1, mixed = _union_groups(plane, k0 + lane, NKB, first0, first1, BK)
        n_both += tl.sum(both.to(tl.int32), axis=0)
        n_only0 += tl.sum(only0.to(tl.int32), axis=0)
        n_only1 += tl.sum(only1.to(tl.int32), axis=0)
        n_mixed += tl.sum(mixed.to(tl.int32), axis=0)
    s_both = n_both // SLOTS
    s0 = n_only0 // SLOTS
    s1 = n_only1 // SLOTS
    excess = tl.maximum(s0, s1) - tl.minimum(s0, s1)
    excess0 = tl.where(s0 > s1, excess, 0)
    excess1 = tl.where(s1 > s0, excess, 0)
    mixed_base = (s_both + s0 + s1) * SLOTS
    left0 = n_both - s_both * SLOTS                 # leftovers before each group's in the mixed steps
    left1 = left0 + n_only0 - s0 * SLOTS
    left_m = left1 + n_only1 - s1 * SLOTS
    codes = codes_ptr + pid * NCODE
    r_both = 0
    r0 = 0
    r1 = 0
    r_m = 0
    for k0 in range(0, NKB, CHUNK):
        kb = k0 + lane
        flag, both, only0, only1, mixed = _union_groups(plane, kb, NKB, first0, first1, BK)
        pos = tl.where(both, _union_positions(r_both + tl.cumsum(both.to(tl.int32), axis=0) - 1, s_both, s_both,
                                              excess, 0, mixed_base, 0, SLOTS, 0, SPLIT), 0)
        pos = tl.where(only0, _union_positions(r0 + tl.cumsum(only0.to(tl.int32), axis=0) - 1, s0, s_both,
                                               excess, excess0, mixed_base, left0, SLOTS, 1, SPLIT), pos)
        pos = tl.where(only1, _union_positions(r1 + tl.cumsum(only1.to(tl.int32), axis=0) - 1, s1, s_both,
                                               excess, excess1, mixed_base, left1, SLOTS, 2, SPLIT), pos)
        pos = tl.where(mixed, mixed_base + left_m + r_m + tl.cumsum(mixed.to(tl.int32), axis=0) - 1, pos)
        tl.store(codes + pos, 4 * kb + flag, mask=flag > 0)
        r_both += tl.sum(both.to(tl.int32), axis=0)
        r0 += tl.sum(only0.to(tl.int32), axis=0)
        r1 += tl.sum(only1.to(tl.int32), axis=0)
        r_m += tl.sum(mixed.to(tl.int32), axis=0)
    filled = mixed_base + left_m + n_mixed
    n_ring = s_both + s0 + s1 + (left_m + n_mixed + SLOTS - 1) // SLOTS
    pad = filled + tl.arange(0, SLOTS)
    tl.store(codes + pad, tl.zeros([SLOTS], tl.int32), mask=pad < n_ring * SLOTS)
    tl.store(union_counts_ptr + pid * 4, n_ring)
    tl.store(union_counts_ptr + pid * 4 + 1, s_both)
    tl.store(union_counts_ptr + pid * 4 + 2, s0)
    tl.store(union_counts_ptr + pid * 4 + 3, s1)


def kept_to_union(kept: KeptBlocks, config, slots: int, split: bool = False) -> UnionSteps:
    """The union ring of each pair of query blocks (``blocks.UnionSteps``) from the selection kernel's kept
    lists, ``slots`` key blocks per step; split: the alternating "only" steps interleaved by halves."""
    counts = kept.counts.contiguous()
    indices = kept.indices.contiguous()
    *lead, nqb = counts.shape
    nkb = indices.shape[-1]
    npair = -(-nqb // 2)
    ncode = (-(-nkb // slots) + 1) * slots
    programs = counts.numel() // nqb * npair
    plane = torch.empty(programs, nkb, dtype=torch.int8, device=counts.device)
    union_counts = torch.empty(*lead, npair, 4, dtype=torch.int32, device=counts.device)
    codes = torch.empty(*lead, npair, ncode, dtype=torch.int32, device=counts.device)
    _kept_to_union_kernel[(programs,)](counts, indices, plane, union_counts, codes, nkb, nqb, npair, ncode,
                                       BQ=config.block_q, BK=config.block_k, SLOTS=slots,
                                       CHUNK=min(1024, pow2(nkb)), SPLIT=split)
    return UnionSteps(counts=union_counts, codes=codes, slots=slots, split=split)


@triton.jit
def _attend_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, counts_ptr, idx_ptr, qs_ptr, ks_ptr,
    N, HQ, GROUP, NQB, NKB, NCH, scale_log2e,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_on,
    HEAD_DIM: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, TB: tl.constexpr, DIAG: tl.constexpr,
    INTERPRET: tl.constexpr, QK8: tl.constexpr,
):
    qb = NQB - 1 - tl.program_id(0)   # longest rows first within each head
    bh = tl.program_id(1)
    b, h, kvh, rows, d, q = _query_block(q_ptr, qb, bh, N, HQ, GROUP, stride_qb, stride_qh, stride_qn, BQ, HEAD_DIM)
    k_base = k_ptr + b * stride_kb + kvh * stride_kh
    v_base = v_ptr + b * stride_vb + kvh * stride_vh
    count = tl.load(counts_ptr + bh * NQB + qb)
    idx_base = idx_ptr + (bh * NQB + qb) * NKB
    ks_base = ks_ptr
    if QK8:
        scale_log2e = scale_log2e * tl.load(qs_ptr + bh * N + rows, mask=rows < N, other=1.0)
        ks_base = ks_ptr + (b * (HQ // GROUP) + kvh) * NCH
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
                                     stride_vn, N, scale_log2e, d, ks_base, BK, TB, False, INTERPRET, QK8)
    for p0 in range(n_full, count, TB):
        acc, m_i, l_i = _attend_tile(acc, m_i, l_i, q, k_base, v_base, idx_base, p0, count, rows, stride_kn,
                                     stride_vn, N, scale_log2e, d, ks_base, BK, TB, True, INTERPRET, QK8)
    _store_rows(o_ptr, acc, l_i, b, h, rows, d, N, stride_ob, stride_oh, stride_on)


# Tile configurations kept as data. Gathered form: tb kept blocks gathered per step into one BLOCK_N = tb *
# block_k tile, warps, stages; the softmax scale inside exp2's argument (one FFMA per score instead of FMUL +
# FADD; 1-2% faster from 32K for 64-row blocks than outside it, the form removed on 2026-12-03). tb=1 needs half
# the shared memory of tb=2 (49 KB instead of 83 KB), so 3 programs fit per SM instead of 2; tb=2 took
# 2-14% longer at 16K-128K. TMA copies of single blocks and Triton's warp specialization were
# slower or did not compile. Split form (split=True): stages of the 64-key TMA copies; with 3,
# one program per SM (113 KB of shared memory) and the fastest full pairs; with 2, two programs per SM,
# 10% slower on full pairs and 2-4% faster where most kept blocks are lone. lone_pairs: two lone
# blocks per 64-key gathered step (an odd last one alone), 3-14% less time than one per step at all but
# one measured point. int8 q . k sums become float32 by the conversion instruction (an exact magic-number
# add was 1-5% faster at 16K, 0-2.4% slower from 32K).
_TB2 = dict(tb=2, warps=4, stages=3)
_TB1 = {**_TB2, "tb": 1, "stages": 4}
_SPLIT = {**_TB1, "split": True, "stages": 3, "lone_pairs": True}
ATTEND_CONFIGS = {
    "default": _SPLIT,
    "split_s2_lp": {**_SPLIT, "stages": 2},                # the default with int8 q . k
    "gathered": _TB1,                   # where K and V strides cannot be copied by TMA; the default before the split form
    # FlashAttention-3's layout on the union of two query blocks' kept blocks: both consumer warpgroups read one
    # ring of slots * 32-key tiles (any blocks per step, one TMA box each); each skips the steps only the other
    # keeps, and the alternating "only" steps after the excess are halved (blocks.UnionSteps split), each
    # consumer computing its own 64 keys of them; a persistent grid whose producer takes each next pair from a
    # global counter, so the pairs in flight stay consecutive and keep the L2 (a static deal lost it: 63% hits
    # against 90%). The Hopper default (DEFAULT_HOPPER_TILE); docs/kernels.md has the variants that lost.
    "gluon_split_p": {**_SPLIT, "gluon": True, "union": True, "skip": True, "split_only": True, "slots": 4,
                      "stages": 3, "pingpong": False, "persistent": True},
}
# The default tile is "default" for every block size; with int8 q . k the split form's K tiles take half
# the shared memory, and for 64-row blocks 2 stages (3 programs per SM) beat 3 stages (one per SM) at every
# density from 64K; 128-row blocks (8 warps) keep 3 
DEFAULT_INT8_TILE = {64: "split_s2_lp", 128: "default"}
# On Hopper the default exact computation pass is the Gluon union ring (1.01-1.03x cuDNN's speed at
# density 1, 0.89 of it at density 0.5 on SALE's masks at 64K, where the Triton split form reaches 0.79 and
# 0.75); where it cannot run (another GPU, the interpreter, int8 q . k, other block or head sizes, K/V strides
# TMA cannot copy) the Triton tiles above stay the default
DEFAULT_HOPPER_TILE = "gluon_split_p"


def attend_triton(q, k, v, mask, config, kept: KeptBlocks | None = None, tile: str | None = None,
                  k_mean: torch.Tensor | None = None, steps: KeptSteps | UnionSteps | None = None):
    """Triton version of ``reference.attention_reference`` over the blocks of ``mask`` (or of ``kept``,
    the selection kernel's compact lists, which then must describe the same causal blocks). With
    ``config.int8_qk``, q and k are first quantized to 8 bits (k smoothed by ``k_mean``, float32 [B, Hkv, D],
    computed here when None) and q . k runs on the int8 tensor cores. tile None: ``config.attend_tile``, and if
    that is None too: on an H100/H200 (sm_90) with
    exact q . k, 64-row and 32-key blocks and head dim 64 or 128, the Gluon union ring (DEFAULT_HOPPER_TILE,
    attend_gluon.py); elsewhere the Triton split form ("default"), or "gathered" for K/V strides TMA
    cannot copy. steps: the step lists the tile walks, built once for a mask used more than once
    (``step_lists(q, k, v, kept, config, tile)()``); without them every call builds them from the kept lists."""
    batch, hq, seq_len, head_dim = q.shape
    bq, bk = config.block_q, config.block_k
    if bq % bk or bq & (bq - 1) or bk & (bk - 1) or bk < 16:
        raise ValueError(f"the triton backend needs power-of-two block_k >= 16 dividing block_q, got "
                         f"block_q={bq}, block_k={bk}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous in the head dimension (stride(-1) == 1)")
    if kept is None and steps is None:  # blocks above the diagonal are ignored, as in the reference
        kept = mask_to_kept(mask & causal_blocks(seq_len, config, mask.device))
    if tile is None and config.attend_tile is not None:
        tile = config.attend_tile
        if tile not in ATTEND_CONFIGS:
            raise ValueError(f"SaleConfig.attend_tile must be None or one of {list(ATTEND_CONFIGS)}, got {tile!r}")
    if tile is not None and tile not in ATTEND_CONFIGS:
        raise ValueError(f"tile must be None or one of {list(ATTEND_CONFIGS)}, got {tile!r}")
    unread = (kept if kept is not None else steps).counts
    qk8, scales = 0, (unread, unread)  # the scale pointers are not read without int8 q . k
    if config.int8_qk:
        from .quantize_kernel import quantize_int8_triton
        if k_mean is None:
            k_mean = k.mean(2, dtype=torch.float32)
        q, q_scale = quantize_int8_triton(q, 1)
        k, k_scale = quantize_int8_triton(k, 2 * bk, k_mean.contiguous())
        scales = (q_scale, k_scale)
    if tile is None:
        tile = default_tile(q, k, v, config)
    cfg = ATTEND_CONFIGS[tile]
    if config.int8_qk:
        qk8 = 1
    if cfg.get("gluon"):
        if config.int8_qk or interpreting():
            raise ValueError(f"tile {tile!r} runs exact q . k on a Hopper GPU only (no int8_qk, no interpreter)")
        from .attend_gluon import attend_union_gluon
        union = _prebuilt(steps, UnionSteps, tile) or kept_to_union(kept, config, cfg["slots"], split=True)
        return attend_union_gluon(q, k, v, union, config, slots=cfg["slots"], stages=cfg["stages"],
                                  persistent=cfg["persistent"])
    if cfg.get("split"):
        split_steps = _prebuilt(steps, KeptSteps, tile) or kept_to_steps(kept, config)
        return _attend_steps(q, k, v, split_steps, config, cfg, qk8, scales, out_dtype=v.dtype)
    if steps is not None:
        raise ValueError(f"tile {tile!r} reads the kept lists, not step lists: pass kept (or the mask), not steps")
    num_warps, num_stages = _warps_and_stages(cfg, bq)
    nqb, nkb = num_blocks(seq_len, bq), num_blocks(seq_len, bk)
    out = torch.empty(q.shape, dtype=v.dtype, device=q.device)
    _attend_kernel[(nqb, batch * hq)](
        q, k, v, out, kept.counts, kept.indices, *scales,
        seq_len, hq, hq // k.shape[1], nqb, nkb, num_blocks(seq_len, 2 * bk),
        config.scale_for(head_dim) * math.log2(math.e),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        HEAD_DIM=head_dim, BQ=bq, BK=bk, TB=cfg["tb"], DIAG=pow2(bq // bk), INTERPRET=interpreting(), QK8=qk8,
        num_warps=num_warps, num_stages=num_stages)
    return out


def _prebuilt(steps, kind, tile):
    """Step lists passed in for `tile`, checked to be the kind it walks (None when none were passed)."""
    if steps is not None and not isinstance(steps, kind):
        raise ValueError(f"tile {tile!r} walks {kind.__name__} (step_lists(..., tile={tile!r})), got "
                         f"{type(steps).__name__}")
    return steps


def default_tile(q, k, v, config) -> str:
    """The tile attend_triton runs without tile or config.attend_tile: the Gluon union ring on Hopper where it
    applies; else the Triton split form, which needs TMA-compatible K and V (else the gathered form)."""
    tile = DEFAULT_INT8_TILE.get(config.block_q, "default") if config.int8_qk else "default"
    if _hopper_gluon_eligible(q, k, v, config):
        return DEFAULT_HOPPER_TILE
    if ATTEND_CONFIGS[tile].get("split") and not _tma_compatible(k, v):
        return "gathered"
    return tile


def step_lists(q, k, v, kept: KeptBlocks, config, tile: str | None = None):
    """A zero-argument function building the step lists that ``tile`` (default: the tile attend_triton would run)
    derives from the kept lists inside every attend_triton call (``kept_to_union`` or ``kept_to_steps``), for
    timing that part apart; None for tiles that read the kept lists directly."""
    cfg = ATTEND_CONFIGS[tile or config.attend_tile or default_tile(q, k, v, config)]
    if cfg.get("union"):
        return lambda: kept_to_union(kept, config, cfg["slots"], cfg.get("split_only", False))
    if cfg.get("split"):
        return lambda: kept_to_steps(kept, config)
    return None


def _warps_and_stages(cfg, block_q):
    """A tile's launch options: a 128-row query block takes two warpgroups (as flash attention's 128-row
    tiles); the interpreter runs one stage."""
    warps = max(cfg["warps"], 8) if block_q >= 128 else cfg["warps"]
    return warps, 1 if interpreting() else cfg["stages"]


def _hopper_gluon_eligible(q, k, v, config) -> bool:
    """Whether the Gluon union ring (DEFAULT_HOPPER_TILE) runs these inputs: an sm_90 GPU, not the interpreter,
    exact 16-bit q . k, 64-row and 32-key blocks, head dim 64 or 128, TMA-compatible K and V."""
    return (q.is_cuda and not interpreting() and not config.int8_qk and torch.cuda.get_device_capability(q.device)
            == (9, 0) and config.block_q == 64 and config.block_k == 32 and q.shape[-1] in (64, 128)
            and q.dtype in (torch.bfloat16, torch.float16) and _tma_compatible(k, v))


def _tma_compatible(*xs) -> bool:
    return all(x.data_ptr() % 16 == 0 and all(st * x.element_size() % 16 == 0 for st in x.stride()[:-1]) for x in xs)


def _kv_descriptors(k, v, box_keys):
    """TMA descriptors of K and V [B, Hkv, N, D], one box of box_keys keys per copy."""
    from triton.tools.tensor_descriptor import TensorDescriptor
    for name, x in (("k", k), ("v", v)):
        if not _tma_compatible(x):
            raise ValueError(f"the split form of the triton computation pass copies {name} by TMA: it needs a "
                             f"16-byte aligned base and strides, got strides {tuple(x.stride())} (tile 'gathered' "
                             f"takes any)")
    return tuple(TensorDescriptor(x, list(x.shape), list(x.stride()), [1, 1, box_keys, x.shape[-1]]) for x in (k, v))


def _attend_steps(q, k, v, steps: KeptSteps, config, cfg, qk8, scales, out_dtype):
    batch, hq, seq_len, head_dim = q.shape
    bq, bk = config.block_q, config.block_k
    desc_k2, desc_v2 = _kv_descriptors(k, v, 2 * bk)
    num_warps, num_stages = _warps_and_stages(cfg, bq)
    nqb = num_blocks(seq_len, bq)
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    _attend_steps_kernel[(nqb, batch * hq)](
        q, k, v, desc_k2, desc_v2, out, steps.counts, steps.steps, *scales,
        seq_len, hq, hq // k.shape[1], nqb, steps.steps.shape[-1], config.scale_for(head_dim) * math.log2(math.e),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        HEAD_DIM=head_dim, BQ=bq, BK=bk, INTERPRET=interpreting(), QK8=qk8, LONE_PAIRS=cfg.get("lone_pairs", False),
        num_warps=num_warps, num_stages=num_stages)
    return out


def dense_kept(batch: int, num_q_heads: int, seq_len: int, config, device) -> KeptBlocks:
    """Every causal block kept: the kept lists of the project's dense Triton attention."""
    mask = causal_blocks(seq_len, config, device).expand(batch, num_q_heads, -1, -1).contiguous()
    return mask_to_kept(mask)
