"""Stage 2 on the GPU: the two-pass selection, one program per QB query blocks of one query head.
Its BLOCK_M rows are every row of those blocks, or with SaleConfig.estimate_rows every
ROW_STRIDE-th row (rows 0, s, 2s, ... of each block): fewer rows per block, more blocks per program.

1. Exact statistics m_i, l_i over the sink and local keys j <= i (q . k on 16-bit tensor cores,
   minus q_i . k_mean in float32, so the inputs stay exact), online as in flash attention.
2. t_i = m_i + ln(tau * l_i) / scale.
3. Over the candidate key tiles only (keys before the last query block's local window), the 4-bit
   estimate on 8-bit tensor cores: s_hat = dot * sq_i * sk_j + qmk_j; a block is kept iff some
   s_hat_ij in it exceeds t_i. The default computes each tile keys first ([keys, rows], so the per-key
   sk_j, qmk_j are per accumulator row and sq_i, t_i loop-invariant per column) and each thread sets the
   flags of the blocks it holds (the vote); return_margin keeps max(s_hat - t) per block instead.
4. A pass over the whole row sets keep = always | (candidate & estimate), and writes the bool mask
   row and the compact kept list (ascending indices, -1 padding) whole: no element is left unwritten.
"""
import math

import torch
import triton
import triton.language as tl

from ..blocks import KeptBlocks, num_blocks
from ._common import interpreting, pow2


@triton.jit
def _block_flags(qb, c, N, NQB, NKB, BQ: tl.constexpr, BK: tl.constexpr, WINDOW, SINK_BLOCKS):
    """(exists, always, candidate) for query blocks qb [QB] x key blocks c [NB]."""
    last_row = tl.minimum((qb + 1) * BQ, N) - 1
    exists = (qb[:, None] < NQB) & (c[None, :] < NKB)
    causal = exists & (c[None, :] * BK <= last_row[:, None])
    local = (c[None, :] + 1) * BK - 1 >= qb[:, None] * BQ - WINDOW
    always = causal & (local | (c[None, :] < SINK_BLOCKS))
    return exists, always, causal & ~always


@triton.jit
def _local_start_key(first_row, WINDOW, BK: tl.constexpr):
    """First key of the first local block of a query block starting at first_row."""
    x = first_row - WINDOW + 1
    return tl.where(x <= 0, 0, (tl.cdiv(x, BK) - 1) * BK)


@triton.jit
def _estimate_dot(q_hat, khat_base, keys, N, d, FP8: tl.constexpr, KEYS_FIRST: tl.constexpr = False):
    """The integer dot products <q_hat_i, k_hat_j> of one key tile on 8-bit tensor cores, [rows, keys] or
    with KEYS_FIRST [keys, rows] (the K tile as the MMA's A operand): int32, or with FP8 (operands in
    e4m3, which holds every integer in [-7, 7]) float32, equal to the integer."""
    ptrs = khat_base + keys[:, None] * q_hat.shape[1] + d[None, :]
    if FP8:  # no `other`: keys past N only reach the last, partial key block, never a candidate
        k_hat = tl.load(ptrs, mask=(keys < N)[:, None])
        out_dtype: tl.constexpr = tl.float32
    else:
        k_hat = tl.load(ptrs, mask=(keys < N)[:, None], other=0)
        out_dtype: tl.constexpr = tl.int32
    if KEYS_FIRST:
        acc = tl.dot(k_hat, tl.trans(q_hat), out_dtype=out_dtype)
    else:
        acc = tl.dot(q_hat, tl.trans(k_hat), out_dtype=out_dtype)
    return acc


@triton.jit
def _s_hat(acc, sq, sk_base, qmk_base, keys, N, KEYS_FIRST: tl.constexpr = False):
    """s_hat = dot * sq_i * sk_j + qmk_j in float32, in the reference's order of operations, [rows, keys]
    or with KEYS_FIRST [keys, rows]."""
    kv_ok = keys < N
    sk = tl.load(sk_base + keys, mask=kv_ok, other=0.0)
    qmk = tl.load(qmk_base + keys, mask=kv_ok, other=0.0)
    if KEYS_FIRST:
        val = acc.to(tl.float32) * sq[None, :] * sk[:, None] + qmk[:, None]
    else:
        val = acc.to(tl.float32) * sq[:, None] * sk[None, :] + qmk[None, :]
    return val


@triton.jit
def _block_max_epilogue(acc, sq, t_row, sk_base, qmk_base, keys, N,
                        QB: tl.constexpr, BQ: tl.constexpr, NB: tl.constexpr, BK: tl.constexpr, EPI: tl.constexpr):
    """max over each (query block, key block) of s_hat_ij - t_i, [QB, NB], from the tile's dot products."""
    if EPI == 0:  # every element minus its row threshold, then both maxima
        val = _s_hat(acc, sq, sk_base, qmk_base, keys, N) - t_row[:, None]
        return tl.max(tl.max(tl.reshape(val, (QB, BQ, NB, BK)), axis=3), axis=1)
    elif EPI == 1:  # max over each row's keys first, then t_i once per (row, block): max(x - t) == max(x) - t
        val = _s_hat(acc, sq, sk_base, qmk_base, keys, N)
        row_max = tl.max(tl.reshape(val, (QB * BQ, NB, BK)), axis=2) - t_row[:, None]
        return tl.max(tl.reshape(row_max, (QB, BQ, NB)), axis=1)
    elif EPI == 4:  # probe (wrong masks): the plain port's epilogue, an int max per key block
        row_max = tl.max(tl.reshape(acc, (QB * BQ, NB, BK)), axis=2).to(tl.float32) - t_row[:, None]
        return tl.max(tl.reshape(row_max, (QB, BQ, NB)), axis=1)
    else:  # probe (wrong masks): no epilogue, one max over the tile
        return tl.zeros((QB, NB), tl.float32) + tl.max(tl.max(acc, axis=1), axis=0).to(tl.float32)


@triton.jit
def _set_flags(ptr, flag, INTERPRET: tl.constexpr):
    """ptr[i] = 1 where flag[i], each thread for the elements it holds: a tl.store would first be given
    a coalesced layout and convert flag through shared memory (CTA barriers), and several threads set
    the same byte, which is harmless since they all write 1. The interpreter runs no inline PTX."""
    if INTERPRET:
        tl.store(ptr, tl.full(flag.shape, 1, tl.int8), mask=flag)
    else:
        tl.inline_asm_elementwise(
            "{ .reg .pred p; setp.ne.s32 p, $1, 0; @p st.global.u8 [$2], $3; mov.b32 $0, 0; }",
            "=r,r,l,r", [flag.to(tl.int32), ptr, flag.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _vote_epilogue(acc, sq, t_row, sk_base, qmk_base, keys, N, mask_row, qg, c0, NQB, NKB,
                   QB: tl.constexpr, BQ: tl.constexpr, NB: tl.constexpr, BK: tl.constexpr, INTERPRET: tl.constexpr):
    """The default's estimate epilogue: sets mask[qb, c] = 1 for every (query block, key block) of the
    tile with some s_hat_ij > t_i, in a mask zeroed before the loop; the same bits as
    _block_max_epilogue(...) > 0, since max_i (max_j s_hat_ij - t_i) > 0 iff some max_j s_hat_ij > t_i.
    No margin is formed and nothing is reduced across threads: each thread takes the max over the keys
    it holds of each (row, block), compares it with its t_i and sets the flag itself. The reshapes
    follow the 8-bit MMA accumulator of 4 warps: key = 8k + 2 * (lane % 4) + pair within each 32-key
    block, row = 64 * half + 16 * warp + 8 * j + lane // 4, so every max and the OR over j are in-thread;
    any other layout gives the same flags, only slower."""
    val = _s_hat(acc, sq, sk_base, qmk_base, keys, N)
    BM: tl.constexpr = QB * BQ
    part = tl.max(tl.max(tl.reshape(val, (BM, NB, BK // 8, 4, 2)), axis=4), axis=2)     # [BM, NB, 4]
    hit = (part > t_row[:, None, None]).to(tl.int32)
    row_block = qg * QB + tl.arange(0, BM) // BQ
    c = tl.arange(0, NB)
    where = (row_block * NKB)[:, None, None] + c[None, :, None] + tl.zeros((BM, NB, 4), tl.int32)
    ok = (row_block < NQB)[:, None, None] & ((c0 + c) < NKB)[None, :, None]
    flag6 = tl.reshape(hit * ok.to(tl.int32), (BM // 64, 4, 2, 8, NB, 4))
    where6 = tl.reshape(where, (BM // 64, 4, 2, 8, NB, 4))
    if BQ >= 16:  # rows 8j + lane // 4 of a warp lie in one query block: OR over j in-thread
        _set_flags(mask_row + c0 + tl.max(where6, axis=2), tl.max(flag6, axis=2) != 0, INTERPRET)
    else:
        _set_flags(mask_row + c0 + where6, flag6 != 0, INTERPRET)


@triton.jit
def _vote_keys_first_step(q_hat, khat_base, d, sq, t_row, sk_base, qmk_base, n0, N, mask_row, qg, NQB, NKB,
                          QB: tl.constexpr, BQ: tl.constexpr, BLOCK_N: tl.constexpr, BK: tl.constexpr,
                          WARP_BLOCKS: tl.constexpr, SPLIT: tl.constexpr, FP8: tl.constexpr, INTERPRET: tl.constexpr):
    """The vote (_vote_epilogue's flags) over keys n0 .. n0 + BLOCK_N computed keys first: the K tile is
    the MMA's A operand, so sk_j and qmk_j are per-row values of the accumulator and sq_i, t_i per-column
    ones, loaded once before the loop. s_hat in the same float operations; the max over the keys a
    thread holds of each column, minus the column's t_i (max(x) - t > 0 iff max(x) > t, as in the
    margin path); the max over the columns it holds of each query block, > 0. In the 8-bit MMA
    accumulator of 4 warps a thread holds tile rows 64h + 16w + 8j + lane // 4 and columns
    8c + 2 (lane % 4) + p: one query block per run of BQ // 8 values of c (BQ >= 8); one key block per
    (h, w) as BK >= 16, or with WARP_BLOCKS (BLOCK_N == 4 * BK) one per w, the rows permuted so that
    row 64h + 16w + i holds key w * BK + 16h + i. So every max is in-thread.
    SPLIT: one MMA per 64 keys, so that each sk/qmk load has fewer elements than threads, which Triton
    loads straight into the accumulator's row layout instead of converting through shared memory."""
    BM: tl.constexpr = QB * BQ
    SUB: tl.constexpr = 64 if SPLIT else BLOCK_N
    NHS: tl.constexpr = SUB // 64
    r = tl.arange(0, SUB)
    if WARP_BLOCKS:
        for s in tl.static_range(BLOCK_N // SUB):
            keys = n0 + ((r // 16) % 4) * BK + (s * NHS + r // 64) * 16 + r % 16
            val = _s_hat(_estimate_dot(q_hat, khat_base, keys, N, d, FP8, True), sq, sk_base, qmk_base, keys, N, True)
            m = tl.max(tl.max(tl.reshape(val, (NHS, 4, 2, 8, BM)), axis=2), axis=0)        # [4, 8, BM]
            if s == 0:
                key_max = m
            else:
                key_max = tl.maximum(key_max, m)
        col_max = key_max - t_row[None, None, :]
        part = tl.max(tl.max(tl.reshape(col_max, (4, 8, QB, BQ // 8, 4, 2)), axis=5), axis=3)   # [4, 8, QB, 4]
        kb = n0 // BK + tl.arange(0, 4)[:, None, None, None] + tl.zeros((4, 8, QB, 4), tl.int32)
        qb = qg * QB + tl.arange(0, QB)[None, None, :, None] + tl.zeros((4, 8, QB, 4), tl.int32)
        _set_flags(mask_row + qb * NKB + kb, (part > 0) & (qb < NQB) & (kb < NKB), INTERPRET)
    else:
        for s in tl.static_range(BLOCK_N // SUB):
            keys = n0 + s * SUB + r
            val = _s_hat(_estimate_dot(q_hat, khat_base, keys, N, d, FP8, True), sq, sk_base, qmk_base, keys, N, True)
            col_max = tl.max(tl.reshape(val, (NHS, 4, 2, 8, BM)), axis=2) - t_row[None, None, None, :]
            part = tl.max(tl.max(tl.reshape(col_max, (NHS, 4, 8, QB, BQ // 8, 4, 2)), axis=6), axis=4)
            zero = tl.zeros((NHS, 4, 8, QB, 4), tl.int32)                                   # [NHS, 4, 8, QB, 4]
            rows = s * SUB + 64 * tl.arange(0, NHS)[:, None] + 16 * tl.arange(0, 4)[None, :]
            kb = (n0 + rows) // BK
            kb = kb[:, :, None, None, None] + zero
            qb = qg * QB + tl.arange(0, QB)[None, None, None, :, None] + zero
            _set_flags(mask_row + qb * NKB + kb, (part > 0) & (qb < NQB) & (kb < NKB), INTERPRET)


@triton.jit
def _select_kernel(
    q_ptr, k_ptr, kmean_ptr, qhat_ptr, khat_ptr, sq_ptr, sk_ptr, qmk_ptr, tau_ptr,
    mask_ptr, counts_ptr, idx_ptr, margin_ptr, t_ptr,
    N, HQ, GROUP, NQB, NKB, WINDOW, SINK_BLOCKS, scale, scale_log2e,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
    HEAD_DIM: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, QB: tl.constexpr, ROW_STRIDE: tl.constexpr,
    BLOCK_N: tl.constexpr, STATS_N: tl.constexpr, FILL_NB: tl.constexpr, WRITE_MARGIN: tl.constexpr,
    INTERPRET: tl.constexpr, EPI: tl.constexpr, HEADS_FIRST: tl.constexpr, FP8: tl.constexpr,
    WARP_BLOCKS: tl.constexpr, SPLIT: tl.constexpr, PHASE: tl.constexpr = 0,
):
    # PHASE 0: the whole pass. With the Gluon estimate (select_gluon.py) the kernel runs twice around it:
    # PHASE 1 writes the row thresholds t_i (t_ptr, [B * Hq, NQB * BQS], +inf past N) and stops; PHASE 2 is the
    # row pass alone, over a mask the estimate set flags in (zero elsewhere).
    BQS: tl.constexpr = BQ // ROW_STRIDE      # estimated rows per query block
    BLOCK_M: tl.constexpr = QB * BQS
    NB_T: tl.constexpr = BLOCK_N // BK
    n_groups = tl.cdiv(NQB, QB)
    if HEADS_FIRST:  # launch order: the longest rows of every head first, then shorter ones
        qg = n_groups - 1 - tl.program_id(1)
        bh = tl.program_id(0)
    else:
        qg = n_groups - 1 - tl.program_id(0)
        bh = tl.program_id(1)
    b = bh // HQ
    h = bh % HQ
    kvh = h // GROUP
    bkv = b * (HQ // GROUP) + kvh
    r = tl.arange(0, BLOCK_M)
    rows = (qg * QB + r // BQS) * BQ + (r % BQS) * ROW_STRIDE
    row_ok = rows < N
    d = tl.arange(0, HEAD_DIM)
    qb = qg * QB + tl.arange(0, QB)

    last_qb = tl.minimum(qg * QB + QB, NQB) - 1
    cand_end = _local_start_key(last_qb * BQ, WINDOW, BK)
    mask_row = mask_ptr + bh * NQB * NKB
    idx_row = idx_ptr + bh * NQB * NKB
    margin_row = margin_ptr + bh * NQB * NKB
    if PHASE != 2:
        # ---- 1. exact statistics over sink and local keys -------------------------------------------
        q = tl.load(q_ptr + b * stride_qb + h * stride_qh + rows[:, None] * stride_qn + d[None, :],
                    mask=row_ok[:, None], other=0.0)
        kmean = tl.load(kmean_ptr + bkv * HEAD_DIM + d)
        c_row = tl.sum(q.to(tl.float32) * kmean[None, :], axis=1)           # q_i . k_mean
        first_row = (rows // BQ) * BQ
        ls_row = _local_start_key(first_row, WINDOW, BK)                    # [BLOCK_M]
        m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_M,), tl.float32)
        k_base = k_ptr + b * stride_kb + kvh * stride_kh
        sink_end = tl.minimum(SINK_BLOCKS * BK, N)
        local_lo = _local_start_key(qg * QB * BQ, WINDOW, BK)
        local_hi = tl.minimum((qg + 1) * QB * BQ, N)
        for part in tl.static_range(2):
            lo = 0 if part == 0 else local_lo
            hi = sink_end if part == 0 else local_hi
            for n0 in range(lo, hi, STATS_N):
                keys = n0 + tl.arange(0, STATS_N)
                kt = tl.load(k_base + keys[:, None] * stride_kn + d[None, :], mask=(keys < N)[:, None], other=0.0)
                if INTERPRET:  # the interpreter's dot multiplies the raw bits of 16-bit floats
                    s = tl.dot(q.to(tl.float32), tl.trans(kt.to(tl.float32))) - c_row[:, None]
                else:
                    s = tl.dot(q, tl.trans(kt)) - c_row[:, None]
                ok = (keys[None, :] <= rows[:, None]) & (keys[None, :] < hi)
                if part == 0:
                    ok = ok & (keys[None, :] < ls_row[:, None])
                else:
                    ok = ok & (keys[None, :] >= ls_row[:, None])
                s = tl.where(ok, s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, axis=1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                l_i = l_i * tl.exp2((m_i - m_safe) * scale_log2e) + tl.sum(tl.exp2((s - m_safe[:, None]) * scale_log2e), axis=1)
                m_i = m_new

        # ---- 2. row thresholds ----------------------------------------------------------------------
        tau = tl.load(tau_ptr + h)
        t_row = m_i + tl.log(tau * l_i) / scale
        t_row = tl.where(row_ok, t_row, float("inf"))
        if PHASE == 1:  # estimated row r of the program is row (qg * QB * BQS + r) of its head's thresholds
            tl.store(t_ptr + bh * NQB * BQS + qg * BLOCK_M + r, t_row, mask=qg * QB + r // BQS < NQB)

    if PHASE == 0:
        # ---- 3. the 4-bit estimate over candidate tiles ------------------------------------------------
        hat_rows = bh * N + rows
        q_hat = tl.load(qhat_ptr + hat_rows[:, None] * HEAD_DIM + d[None, :], mask=row_ok[:, None], other=0)
        if FP8:
            q_hat = q_hat.to(tl.float32).to(tl.float8e4nv)
        sq = tl.load(sq_ptr + hat_rows, mask=row_ok, other=0.0)
        khat_base = khat_ptr + bkv * N * HEAD_DIM
        # Hot loop: nothing but the estimate and stores of raw keep flags (and margins), with no value
        # carried between iterations, so that Triton can pipeline the K loads under the MMAs.
        sk_base = sk_ptr + bkv * N
        qmk_base = qmk_ptr + bh * N
        if EPI >= 2 and EPI <= 3:  # the vote only sets flags: clear the blocks the loop covers first
            zero_end = tl.minimum(tl.cdiv(cand_end, BLOCK_N) * NB_T, NKB)
            for c0 in range(0, zero_end, FILL_NB):
                cz = c0 + tl.arange(0, FILL_NB)
                tl.store(mask_row + qb[:, None] * NKB + cz[None, :], tl.zeros((QB, FILL_NB), tl.int8),
                         mask=(qb < NQB)[:, None] & (cz < zero_end)[None, :])
            tl.debug_barrier()
        for n0 in range(0, cand_end, BLOCK_N):
            if EPI == 3:
                _vote_keys_first_step(q_hat, khat_base, d, sq, t_row, sk_base, qmk_base, n0, N, mask_row, qg, NQB, NKB,
                                      QB, BQS, BLOCK_N, BK, WARP_BLOCKS, SPLIT, FP8, INTERPRET)
            else:
                keys = n0 + tl.arange(0, BLOCK_N)
                acc = _estimate_dot(q_hat, khat_base, keys, N, d, FP8)
                if EPI == 2:
                    _vote_epilogue(acc, sq, t_row, sk_base, qmk_base, keys, N, mask_row, qg, n0 // BK, NQB, NKB,
                                   QB, BQS, NB_T, BK, INTERPRET)
                else:
                    blockmax = _block_max_epilogue(acc, sq, t_row, sk_base, qmk_base, keys, N, QB, BQS, NB_T, BK, EPI)
                    c = n0 // BK + tl.arange(0, NB_T)
                    ok = (qb[:, None] < NQB) & (c[None, :] < NKB)
                    tl.store(mask_row + qb[:, None] * NKB + c[None, :], (blockmax > 0).to(tl.int8), mask=ok)
                    if WRITE_MARGIN:
                        tl.store(margin_row + qb[:, None] * NKB + c[None, :], blockmax, mask=ok)
        tl.debug_barrier()  # the row pass below reads what other threads of this program stored

    if PHASE != 1:
        # ---- 4. the whole row: keep = always | (candidate & estimate), compact kept list ----------------
        est_end = tl.cdiv(cand_end, BLOCK_N) * NB_T if PHASE == 0 else NKB   # key blocks the estimate wrote
        count = tl.zeros((QB,), tl.int32)
        for c0 in range(0, NKB, FILL_NB):
            c = c0 + tl.arange(0, FILL_NB)
            exists, always, cand = _block_flags(qb, c, N, NQB, NKB, BQ, BK, WINDOW, SINK_BLOCKS)
            written = exists & (c[None, :] < est_end)
            est = tl.load(mask_row + qb[:, None] * NKB + c[None, :], mask=written, other=0)
            keep = always | (cand & (est > 0))
            tl.store(mask_row + qb[:, None] * NKB + c[None, :], keep.to(tl.int8), mask=exists)
            keep_i = (keep & exists).to(tl.int32)
            pos = count[:, None] + tl.cumsum(keep_i, axis=1) - 1
            tl.store(idx_row + qb[:, None] * NKB + pos, c[None, :] + 0 * pos, mask=keep_i > 0)
            count += tl.sum(keep_i, axis=1)
            if WRITE_MARGIN:
                margin = tl.load(margin_row + qb[:, None] * NKB + c[None, :], mask=written & cand, other=float("-inf"))
                tl.store(margin_row + qb[:, None] * NKB + c[None, :], tl.where(cand, margin, float("-inf")), mask=exists)
        qb_ok = qb < NQB
        tl.store(counts_ptr + bh * NQB + qb, count, mask=qb_ok)
        for s0 in range(tl.min(count, axis=0), NKB, FILL_NB):      # -1 past each count
            slot = s0 + tl.arange(0, FILL_NB)
            pad = qb_ok[:, None] & (slot[None, :] < NKB) & (slot[None, :] >= count[:, None])
            tl.store(idx_row + qb[:, None] * NKB + slot[None, :], tl.full((QB, FILL_NB), -1, tl.int32), mask=pad)


# Tile configurations kept as data. qb: query blocks per program (BLOCK_M = qb * block_q rows); block_n:
# keys per estimate step; epi: estimate epilogue (3: the vote keys first, the K tile as the MMA's A
# operand, each thread setting the flags of the (query block, key block) pairs it holds; 2: the same vote
# rows first; 1: the max over each row's keys, t_i subtracted once per (row, block), max over rows; 0:
# s_hat - t per element, then both maxima; all the same mask, and 1 also gives the margins, so
# return_margin uses it); warp_blocks: (epi 3, block_n == 4 * block_k) each warp holds one whole key
# block; split: (epi 3) one MMA per 64 keys; fp8: q_hat and k_hat as e4m3 (exact for [-7, 7]), float32
# sums, no int-to-float conversion; heads_first: launch order; stats_n: keys per step of the sink/local
# statistics; maxnreg: register cap (None: the compiler's choice). "default" is the kernel of the triton
# backend; the others run the kernel's other paths (the split and in-order keys-first votes, the rows-first
# vote that small estimate_rows tiles fall back to, int8 operands, the max epilogue of return_margin, smaller
# tiles), which the tests check give the very same mask. Tuning variants that lost are in git history and
# docs/kernels.md.
_ROWS_FIRST = dict(qb=2, block_n=128, warps=4, stages=3, epi=2, fp8=True, heads_first=False, stats_n=64,
                   maxnreg=None, warp_blocks=False, split=False)               # the rows-first vote
_TILE = {**_ROWS_FIRST, "epi": 3, "warp_blocks": True}
SELECT_CONFIGS = {
    "default": _TILE,
    "kf_split": {**_TILE, "split": True},
    "kf_in_order": {**_TILE, "warp_blocks": False},
    "kf_n64": {**_TILE, "warp_blocks": False, "block_n": 64, "stats_n": 32},      # 3 programs per SM
    "rows": _ROWS_FIRST,
    "int8": {**_ROWS_FIRST, "fp8": False},
    "epi1": {**_ROWS_FIRST, "fp8": False, "epi": 1},      # the max epilogue, no vote
    "qb1_n64_s32": {**_ROWS_FIRST, "qb": 1, "block_n": 64, "stats_n": 32},                # 4 per SM
}
# Ablation probes (wrong masks, timing only): the plain port's int-max epilogue, and the dot alone.
PROBE_CONFIGS = {"probe_int_max": {**_ROWS_FIRST, "fp8": False, "epi": 4},
                 "probe_dot_only": {**_ROWS_FIRST, "fp8": False, "epi": 5}}
# Registers, spills and shared memory of the last compiled launch of each configuration.
COMPILED_STATS: dict = {}


def keys_first_options(cfg: dict, epi: int, block_n: int, block_k: int) -> dict:
    """The keys-first constexprs of tile cfg at this launch: WARP_BLOCKS needs block_n == 4 * block_k,
    SPLIT more than 64 keys per step; both only with the keys-first vote (epi 3)."""
    return {"WARP_BLOCKS": epi == 3 and cfg["warp_blocks"] and block_n == 4 * block_k,
            "SPLIT": epi == 3 and cfg["split"] and block_n > 64}


def _check_tile(config, block_n: int):
    bq, bk = config.block_q, config.block_k
    for name, value in (("block_q", bq), ("block_k", bk)):
        if value & (value - 1) or value < 16:
            raise ValueError(f"SaleConfig.{name} must be a power of two >= 16 for the triton backend, got {value}")
    if block_n % bk:
        raise ValueError(f"tile BLOCK_N={block_n} must be a multiple of block_k={bk}")


def select_triton(q, k, tau, config, quant, return_margin=False, tile=None, return_kept=False):
    """Triton version of ``reference.select_reference``: (mask, margin or None[, KeptBlocks])."""
    batch, hq, seq_len, head_dim = q.shape
    nqb, nkb = num_blocks(seq_len, config.block_q), num_blocks(seq_len, config.block_k)
    tiles = {**SELECT_CONFIGS, **PROBE_CONFIGS}
    if (tile or "default") not in tiles:
        raise ValueError(f"select_triton: tile must be None or one of {sorted(tiles)}, got {tile!r}")
    cfg = tiles[tile or "default"]
    # the tiles are tuned for block_q = 64; other block sizes keep the program's rows (qb * 64)
    qb_per_prog = max(1, cfg["qb"] * 64 // config.block_q)
    block_n, num_warps, num_stages = cfg["block_n"], cfg["warps"], cfg["stages"]
    epi, heads_first, stats_n, maxnreg = cfg["epi"], cfg["heads_first"], cfg["stats_n"], cfg["maxnreg"]
    if interpreting():
        qb_per_prog, num_warps, num_stages, stats_n = min(qb_per_prog, 2), 4, 1, 32
        block_n = (4 if epi == 3 and (cfg["warp_blocks"] or cfg["split"]) else 2) * config.block_k
    stride = config.estimate_row_stride
    if stride & (stride - 1):
        raise ValueError(f"SaleConfig.estimate_rows must give a power-of-two row stride for the triton backend, "
                         f"got block_q={config.block_q}, estimate_rows={config.estimate_rows}")
    qb_per_prog *= stride  # the same BLOCK_M estimated rows per program, from more query blocks
    block_n = max(block_n, config.block_k)
    _check_tile(config, block_n)
    rows_per_block = config.block_q // stride
    if epi == 3 and (block_n % 64 or rows_per_block < 8 or config.block_k < 16):
        epi = 2  # the keys-first vote's reshapes need 64-key tiles, 8 rows and 16 keys per block
    if return_margin or (qb_per_prog * rows_per_block) % 64:
        epi = min(epi, 1)  # margins come from the max epilogue; the vote's reshapes need 64-row multiples
    scale = config.scale_for(head_dim)
    mask = torch.empty((batch, hq, nqb, nkb), dtype=torch.int8, device=q.device)
    counts = torch.empty((batch, hq, nqb), dtype=torch.int32, device=q.device)
    indices = torch.empty((batch, hq, nqb, nkb), dtype=torch.int32, device=q.device)
    margin = torch.empty((batch, hq, nqb, nkb), dtype=torch.float32, device=q.device) if return_margin else mask
    grid = (triton.cdiv(nqb, qb_per_prog), batch * hq)
    if heads_first:
        grid = grid[::-1]
    fp8 = cfg["fp8"] and not interpreting()  # the interpreter's dot has no float8
    k_hat = quant.k_hat.to(torch.float8_e4m3fn) if fp8 else quant.k_hat
    compiled = _select_kernel[grid](
        q, k, quant.k_mean, quant.q_hat, k_hat, quant.q_scale, quant.k_scale, quant.qmk, tau.float().contiguous(),
        mask, counts, indices, margin, mask,
        seq_len, hq, hq // k.shape[1], nqb, nkb, config.local_window, config.sink_blocks,
        scale, scale * math.log2(math.e),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        HEAD_DIM=head_dim, BQ=config.block_q, BK=config.block_k, QB=qb_per_prog, ROW_STRIDE=stride, BLOCK_N=block_n,
        STATS_N=stats_n, FILL_NB=pow2(min(64, nkb)) if not interpreting() else 16,
        WRITE_MARGIN=return_margin, INTERPRET=interpreting(), EPI=epi, HEADS_FIRST=heads_first,
        FP8=fp8, **keys_first_options(cfg, epi, block_n, config.block_k), num_warps=num_warps,
        num_stages=num_stages, **({"maxnreg": maxnreg} if maxnreg and not interpreting() else {}))
    if not interpreting():
        COMPILED_STATS[tile or "default"] = {"n_regs": compiled.n_regs, "n_spills": compiled.n_spills,
                                             "shared_bytes": compiled.metadata.shared}
    out = (mask.view(torch.bool), margin if return_margin else None)
    return out + (KeptBlocks(counts, indices),) if return_kept else out
