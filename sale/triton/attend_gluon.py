"""Stage 3 on Hopper in Gluon: FlashAttention-3's layout on SALE's block mask (the Hopper default).

Why a second implementation of the computation pass: Triton 3.6 waits on each wgmma of the Triton kernel
(``attend_kernel._attend_steps_kernel``) right after issuing it and runs one 64-row warpgroup per program, so
its 64-key steps reach ~0.8 of cuDNN (docs/kernels.md). Gluon, the explicit-layout dialect shipped inside
Triton, says what FlashAttention-3 says:

- intra-warpgroup pipelining: step t's q . k and the previous step's p . v are issued asynchronously back to
  back; the consumer waits for the first only and computes step t's softmax while p . v runs;
- warp specialization: a producer warp copies K and V by TMA into a ring of STAGES shared-memory stages (one
  full mbarrier per stage, and an empty one the consumers release it through);
- two consumer warpgroups per program (one per query block of a pair 2j, 2j + 1; 384 threads, 240
  registers per consumer thread), so one warpgroup's softmax runs under the other's MMAs.

SALE's two neighbouring query blocks keep different key blocks. Both consumers read one ring over the union of
their kept blocks (``blocks.UnionSteps``): every step is SLOTS = 4 key blocks of 32 keys (128 keys), any four,
each copied as its own TMA boxes, so no block is computed for being its pair's neighbour. Steps of blocks both
keep run unmasked on both consumers; the few mixed steps at the end (group leftovers and the diagonal) run
masked on both. Blocks one query block keeps alone ("only" steps) are where the forms differ:

- the default, tile ``gluon_split_p`` (``_attend_gluon_split_kernel`` with DYNAMIC): the longer group's excess
  steps come first, computed by their consumer alone (the producer releases them for the other; they signal
  full barriers of their own kind, so each consumer waits for every phase of each barrier it uses in order);
  the rest are halved, each step holding two blocks of each query block, and each consumer computes its own
  64 keys of it. One program per SM; its producer takes each next pair from a global counter and hands it to
  the consumers through shared memory, so the pairs in flight stay consecutive (the L2 holds one kv head's
  K and V) and the next pair's first copies overlap the current pair's end (``persistent=False``: one program
  per pair).

The forms that lost (the "only" steps alternating between the consumers, 128 or 64 keys each; the union without
skipping; two query blocks with rings of their own, with or without ping-pong; one warpgroup per query block
over the split form's steps) are measured in docs/kernels.md and kept in git history (before 2026-12-03).
Gluon compiles for a GPU only, not in the interpreter; CI
compiles it for sm_90 (``python -m profiler sass-loop --kernel attend --tile gluon_split_p``).
"""
import math

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language._core import builtin
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                               warpgroup_mma_wait)

# CTA barrier: `barrier` from Triton 3.7 on, `thread_barrier` before; TMA load: `async_load` in newer Tritons
_cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared


@builtin
def _reinterpret(smem, dtype, shape, layout, _semantic=None):
    """The same shared memory seen with another shape and layout (`_reinterpret` in Triton 3.6, `reinterpret`
    later)."""
    view = getattr(smem, "reinterpret", None) or smem._reinterpret
    return view(dtype, shape, layout, _semantic=_semantic)


@gluon.constexpr_function
def _mma_layout(n, num_warps):
    """Register layout of a wgmma result of n columns over one warpgroup's 64 rows."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, n, 16])


@gluon.constexpr_function
def _io_layout(head_dim, num_warps):
    """Register layout of the q loads and output rows: 8 contiguous 16-bit elements per thread."""
    return gl.BlockedLayout([1, 8], [32 * 8 // head_dim, head_dim // 8], [num_warps, 1], [1, 0])


@gluon.jit
def _step_blocks(t, step_base, back, n_full, n_lp, n_single):
    """Step t's two key blocks and keep flags (bit h: half h kept). Steps: n_full full pairs (pair indices
    from the front of the row's step list), n_lp pairs of lone blocks, the odd lone block if n_single is odd,
    then the tail pairs (pair codes 4 * pair + flags, lone and tail codes stored from the back)."""
    lone = t - n_full                         # >= 0 past the full pairs
    masked = t - n_full - n_lp                # >= 0 for the masked steps
    odd = n_single & 1
    is_full = t < n_full
    is_lp = (lone >= 0) & (lone < n_lp)
    is_odd = (masked >= 0) & (masked < odd)
    # the code to read: front[t], back[-2 lone], back[-(n_single - 1)] (odd lone), back[-(n_single + i)] (tail)
    back_off = gl.where(lone < n_lp, 2 * lone, gl.where(masked < odd, n_single - 1, n_single + masked - odd))
    code0 = gl.load(gl.where(is_full, step_base + t, back - back_off))
    code1 = gl.load(back - gl.where(is_lp, 2 * lone + 1, 0))
    lone0 = (code0 >> 2) * 2 + ((code0 & 3) >> 1)   # the block a lone code names
    lone1 = (code1 >> 2) * 2 + ((code1 & 3) >> 1)
    blk_a = gl.where(is_full, 2 * code0, gl.where(is_lp | is_odd, lone0, 2 * (code0 >> 2)))
    blk_b = gl.where(is_full, 2 * code0 + 1, gl.where(is_lp, lone1, gl.where(is_odd, lone0, 2 * (code0 >> 2) + 1)))
    flags = gl.where(is_full | is_lp, 3, gl.where(is_odd, 1, code0 & 3))
    return blk_a, blk_b, flags


@gluon.jit
def _issue_loads(u, n_steps, k_boxes, v_boxes, bars, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp, n_single,
                 BK: gl.constexpr, STAGES: gl.constexpr, NCH: gl.constexpr, UNION: gl.constexpr = False,
                 SLOTS: gl.constexpr = 2, kind=0, base=0):
    """TMA copies of step u's K and V into stage (base + u) % STAGES (base: the steps this program's ring held
    before the current tile's); nothing past the last step. A [SLOTS * BK, HEAD_DIM]
    stage tile with 128-byte swizzling is stored as HEAD_DIM / 64 column chunks of [SLOTS * BK, 64], so each
    block's chunk is one [BK, 64] box: box (stage, chunk c, slot j) = (stage * NCH + c) * SLOTS + j. UNION: the
    step's SLOTS blocks are codes SLOTS * u ... of the list at step_base (block = code >> 2), else the split
    form's decode (SLOTS = 2). kind: which set of STAGES full barriers the copies signal (``_region_barrier``)."""
    ok = u < n_steps
    uc = gl.maximum(gl.minimum(u, n_steps - 1), 0)
    stage = (base + u) % STAGES
    bar = bars.index(kind * STAGES + stage)
    mbarrier.expect(bar, SLOTS * NCH * (desc_k.block_type.nbytes + desc_v.block_type.nbytes), pred=ok)
    if UNION:
        for j in gl.static_range(SLOTS):
            blk = gl.load(step_base + uc * SLOTS + j) >> 2
            for c in gl.static_range(NCH):
                box = (stage * NCH + c) * SLOTS + j
                _tma_load(desc_k, [b, kvh, blk * BK, 64 * c], bar, k_boxes.index(box), pred=ok)
                _tma_load(desc_v, [b, kvh, blk * BK, 64 * c], bar, v_boxes.index(box), pred=ok)
    else:
        blk_a, blk_b, flags = _step_blocks(uc, step_base, back, n_full, n_lp, n_single)
        for c in gl.static_range(NCH):
            box = (stage * NCH + c) * 2
            _tma_load(desc_k, [b, kvh, blk_a * BK, 64 * c], bar, k_boxes.index(box), pred=ok)
            _tma_load(desc_k, [b, kvh, blk_b * BK, 64 * c], bar, k_boxes.index(box + 1), pred=ok)
            _tma_load(desc_v, [b, kvh, blk_a * BK, 64 * c], bar, v_boxes.index(box), pred=ok)
            _tma_load(desc_v, [b, kvh, blk_b * BK, 64 * c], bar, v_boxes.index(box + 1), pred=ok)


@gluon.jit
def _step_columns(t, step_base, back, n_full, n_lp, n_single, BK: gl.constexpr, UNION: gl.constexpr,
                  SLOTS: gl.constexpr, LEAD: gl.constexpr, s_layout: gl.constexpr):
    """Each column's key and whether this consumer keeps it, for a masked step: UNION, from the step's codes
    (bit 0: the lead consumer's query block keeps the block, bit 1: the other's); else from the split decode."""
    col = gl.arange(0, SLOTS * BK, layout=gl.SliceLayout(0, s_layout))
    if UNION:
        code = gl.load(step_base + t * SLOTS + col // BK)
        keys = (code >> 2) * BK + col % BK
        ok = ((code >> (0 if LEAD else 1)) & 1) != 0
    else:
        blk_a, blk_b, flags = _step_blocks(t, step_base, back, n_full, n_lp, n_single)
        half = col // BK
        keys = gl.where(half == 0, blk_a, blk_b) * BK + col % BK
        ok = ((flags >> half) & 1) != 0
    return keys, ok


@gluon.jit
def _softmax_step(s, m_i, l_i, c, rows, keys, ok, MASKED: gl.constexpr):
    """Online softmax of one key tile of raw scores s (float32, [BQ, keys]): p (float32), the new row maximum
    (in exp2 units, times c = scale * log2 e), the accumulator's rescale factor and row sum. MASKED: columns
    not ok (the block is not kept) and keys after each row score -inf."""
    if MASKED:
        s = gl.where(ok[None, :] & (keys[None, :] <= rows[:, None]), s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * c)
    if MASKED:  # a row with no key yet keeps maximum -inf: subtract 0 instead (p = 0, alpha = 1 or 0)
        m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    p = gl.exp2(s * c - m_use[:, None])
    alpha = gl.exp2(m_i - m_use)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, m_new, alpha, l_i


@gluon.jit
def _await_turn(turns, i, n_other_issues, PINGPONG: gl.constexpr, LEAD: gl.constexpr):
    """FlashAttention-3's ping-pong between the two consumers of a pair program: the lead's MMA issue i waits
    for the other's issue i - 1, the other's issue i for the lead's issue i, so one warpgroup's softmax runs
    while the other's MMAs hold the tensor cores. turns.index(c): arrived on by consumer c after each issue
    (the two never drift more than one issue apart, so the phase parity names the issue); no wait once the
    other consumer has issued all its MMAs."""
    if PINGPONG:
        j = i - 1 if LEAD else i
        mbarrier.wait(turns.index(1 if LEAD else 0), j & 1, pred=(j >= 0) & (j < n_other_issues))


@gluon.jit
def _end_turn(turns, PINGPONG: gl.constexpr, LEAD: gl.constexpr):
    if PINGPONG:
        mbarrier.arrive(turns.index(0 if LEAD else 1))


@gluon.jit
def _half(tile, HALF: gl.constexpr, LEAD: gl.constexpr):
    """A stage's K or V tile, or with HALF the lead consumer's first half of its keys, the other's second."""
    if HALF:
        keys: gl.constexpr = tile.shape[0] // 2
        return tile.slice(0 if LEAD else keys, keys)
    else:
        return tile


@gluon.jit
def _pipelined_step(t, tp, bar, phase, n_steps, acc, p_prev, s_dead, m_i, l_i, c, rows, q_smem, k_smem, v_smem,
                    k_boxes, v_boxes, bars,
                    empty, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp, n_single, turns, n_other_issues,
                    MASKED: gl.constexpr, BK: gl.constexpr, STAGES: gl.constexpr, NCH: gl.constexpr, WS: gl.constexpr,
                    PINGPONG: gl.constexpr, LEAD: gl.constexpr, UNION: gl.constexpr, SLOTS: gl.constexpr,
                    s_layout: gl.constexpr, o_layout: gl.constexpr, HALF: gl.constexpr = False, base=0):
    """Ring step t: q . k_t and p_tp . v_tp (tp: this consumer's previous step, t - 1 unless it skips steps)
    in flight together, step t's softmax under the second. Without WS (STAGES = 3): steps t and t - 1 are being
    read, the third stage is refilled one step ahead. HALF: this consumer's half of each step's keys. base: the
    steps of the program's ring before this tile's (step t is in stage (base + t) % STAGES)."""
    s_idx = (base + t) % STAGES
    tp_idx = (base + tp) % STAGES
    mbarrier.wait(bars.index(bar), phase)
    _await_turn(turns, t, n_other_issues, PINGPONG, LEAD)
    s_tok = warpgroup_mma(q_smem, _half(k_smem.index(s_idx), HALF, LEAD).permute((1, 0)), s_dead, use_acc=False,
                          is_async=True)
    o_tok = warpgroup_mma(p_prev, _half(v_smem.index(tp_idx), HALF, LEAD), acc, is_async=True)
    _end_turn(turns, PINGPONG, LEAD)
    if not WS:
        # while both run: step t + STAGES - 2 into the stage of step t - 2, whose p . v every warp waited for in
        # the previous step (the CTA barrier makes that true of all four warps)
        _cta_barrier()
        _issue_loads(t + STAGES - 2, n_steps, k_boxes, v_boxes, bars, desc_k, desc_v, b, kvh, step_base, back,
                     n_full, n_lp, n_single, BK, STAGES, NCH)
    keys = 0
    ok = 0
    if MASKED:  # the columns' keys are loaded while q . k runs (long-scoreboard stalls at low density otherwise)
        keys, ok = _step_columns(t, step_base, back, n_full, n_lp, n_single, BK, UNION, SLOTS, LEAD, s_layout)
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok,))
    p, m_i, alpha, l_i = _softmax_step(s, m_i, l_i, c, rows, keys, ok, MASKED)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok,))
    if WS:  # the producer warp may refill the stage of step tp
        mbarrier.arrive(empty.index(tp_idx))
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    p_op = gl.convert_layout(p.to(v_smem.dtype), gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2))
    return acc, p_op, s, m_i, l_i


@gluon.jit
def _produce_steps(k_boxes, v_boxes, bars, empty, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp, n_single,
                   n_steps, BK: gl.constexpr, STAGES: gl.constexpr, NCH: gl.constexpr, UNION: gl.constexpr = False,
                   SLOTS: gl.constexpr = 2, SCHED: gl.constexpr = False, s_both=0, s0=0, s1=0,
                   ALTERNATE: gl.constexpr = True, base=0):
    """The producer warp (WS): every step's TMA copies, each into a stage the consumers released (empty
    barrier; the first round of each stage passes at once: a fresh barrier's previous phase reads complete).
    SCHED: an "only" step is computed by one of the two consumers; the producer releases it for the other.
    Those are the excess steps and, with ALTERNATE, the alternating ones after the "both" steps (without it,
    the split ring's halved steps, which both consumers compute). base: the steps this program's ring held
    before these (stage (base + u) % STAGES)."""
    excess = gl.maximum(s0, s1) - gl.minimum(s0, s1)
    for u in range(n_steps):
        g = base + u
        mbarrier.wait(empty.index(g % STAGES), ((g // STAGES) & 1) ^ 1)
        kind = 0
        alternating = (u >= excess + s_both) & (u < s_both + s0 + s1)
        if not ALTERNATE:
            alternating = u < 0
        only = (u < excess) | alternating
        if SCHED:   # an "only" step's owner: the longer group's in the excess, then alternating from block 2j's
            kind = gl.where(u < excess, gl.where(s0 > s1, 1, 2),
                            gl.where(alternating, 1 + (u - excess - s_both) % 2, 0))
        _issue_loads(u, n_steps, k_boxes, v_boxes, bars, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp,
                     n_single, BK, STAGES, NCH, UNION, SLOTS, kind, base)
        if SCHED:
            mbarrier.arrive(empty.index(g % STAGES), pred=only)


@gluon.jit
def _load_q(q_ptr, q_smem, N, b, h, qb, stride_qb, stride_qh, stride_qn, HEAD_DIM: gl.constexpr, BQ: gl.constexpr,
            io_l: gl.constexpr):
    """Query block qb's rows into shared memory (zeros past N), visible to this warpgroup's MMAs."""
    qr = qb * BQ + gl.arange(0, BQ, layout=gl.SliceLayout(1, io_l))
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, io_l))
    q = gl.load(q_ptr + b * stride_qb + h * stride_qh + qr[:, None] * stride_qn + d[None, :],
                mask=(qr < N)[:, None], other=0.0)
    q_smem.store(q)
    fence_async_shared()
    _cta_barrier()


@gluon.jit
def _store_rows(o_ptr, acc, l_i, N, b, h, qb, stride_ob, stride_oh, stride_on, HEAD_DIM: gl.constexpr,
                BQ: gl.constexpr, o_layout: gl.constexpr):
    """The output rows acc / l (0 where a row has no key) of query block qb, rows past N not written."""
    l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
    out = acc / gl.where(l_o > 0, l_o, 1.0)[:, None]
    orow = qb * BQ + gl.arange(0, BQ, layout=gl.SliceLayout(1, o_layout))
    od = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    gl.store(o_ptr + b * stride_ob + h * stride_oh + orow[:, None] * stride_on + od[None, :],
             out.to(o_ptr.dtype.element_ty), mask=(orow < N)[:, None])


@gluon.jit
def _region(t0, t1, own_end, base, acc, m_i, l_i, phases, c, rows, q_smem, k_smem, v_smem, bars, empty, codes,
            BQ: gl.constexpr, BK: gl.constexpr, SLOTS: gl.constexpr, STAGES: gl.constexpr, LEAD: gl.constexpr,
            MASKED: gl.constexpr, HALF: gl.constexpr, s_layout: gl.constexpr, o_layout: gl.constexpr):
    """Ring steps t0 .. t1 - 1 of a split union ring (``_split_tile_rows``), all of them this consumer's:
    the first alone, the others pipelined (``_pipelined_step``), then the last p . v, after which the stage
    is released: no stage is held from one region into the next. Steps before own_end are this consumer's
    excess (full barriers of its own kind, 1 + (not LEAD)), the others are computed by both (kind 0). MASKED:
    columns of blocks this consumer does not keep, and keys after each row, score -inf. HALF: this consumer's
    half of each step's keys."""
    if t1 > t0:
        keys_per_step: gl.constexpr = SLOTS * BK // 2 if HALF else SLOTS * BK
        s_dead = gl.zeros([BQ, keys_per_step], gl.float32, s_layout)
        bar, phase, phases = _region_barrier(t0, own_end, base, phases, STAGES, LEAD)
        mbarrier.wait(bars.index(bar), phase)
        s_tok = warpgroup_mma(q_smem, _half(k_smem.index((base + t0) % STAGES), HALF, LEAD).permute((1, 0)), s_dead,
                              use_acc=False, is_async=True)
        keys = 0
        ok = 0
        if MASKED:
            keys, ok = _step_columns(t0, codes, codes, 0, 0, 0, BK, True, SLOTS, LEAD, s_layout)
        s_dead = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok,))
        p, m_i, alpha, l_i = _softmax_step(s_dead, m_i, l_i, c, rows, keys, ok, MASKED)
        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
        p_op = gl.convert_layout(p.to(q_smem.dtype), gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2))
        tp = t0
        for t in range(t0 + 1, t1):
            bar, phase, phases = _region_barrier(t, own_end, base, phases, STAGES, LEAD)
            acc, p_op, s_dead, m_i, l_i = _pipelined_step(
                t, tp, bar, phase, t1, acc, p_op, s_dead, m_i, l_i, c, rows, q_smem, k_smem, v_smem, k_smem, v_smem,
                bars, empty, 0, 0, 0, 0, codes, codes, 0, 0, 0, bars, 0, MASKED, BK, STAGES, 1, True, False, LEAD,
                True, SLOTS, s_layout, o_layout, HALF, base)
            tp = t
        o_tok = warpgroup_mma(p_op, _half(v_smem.index((base + tp) % STAGES), HALF, LEAD), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok,))
        mbarrier.arrive(empty.index((base + tp) % STAGES))
    return acc, m_i, l_i, phases


@gluon.jit
def _region_barrier(t, own_end, base, phases, STAGES: gl.constexpr, LEAD: gl.constexpr):
    """The full barrier of ring step t of a split union ring and the phase to wait for (the phase of each (kind,
    stage) is a bit of `phases`, flipped after each wait): kind 1 + (not LEAD) before own_end (this consumer's excess), else kind 0; stage (base + t) % STAGES."""
    bit = gl.where(t < own_end, 1 + (0 if LEAD else 1), 0) * STAGES + (base + t) % STAGES
    return bit, (phases >> bit) & 1, phases ^ (1 << bit)


@gluon.jit
def _split_tile_rows(q_ptr, o_ptr, q_smem, k_smem, v_smem, bars, empty, N, b, h, qb, codes, n_ring, s_both, s0, s1,
                     base, phases, scale_log2e, stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
                     HEAD_DIM: gl.constexpr, BQ: gl.constexpr, BK: gl.constexpr, SLOTS: gl.constexpr,
                     STAGES: gl.constexpr, LEAD: gl.constexpr, s_layout: gl.constexpr, half_layout: gl.constexpr,
                     o_layout: gl.constexpr, io_l: gl.constexpr):
    """One consumer warpgroup's query block of one tile (pair) of the split union ring (``blocks.UnionSteps``
    with split): its excess steps if its query block has the more "only" steps, then the "both" steps, both
    unmasked over all keys of a step; then the halved "only" steps, each consumer its half of every step; then
    the mixed steps, masked. Each region ends with its last p . v (``_region``). Returns the phase bits."""
    _load_q(q_ptr, q_smem, N, b, h, qb, stride_qb, stride_qh, stride_qn, HEAD_DIM, BQ, io_l)
    rows = qb * BQ + gl.arange(0, BQ, layout=gl.SliceLayout(1, s_layout))
    m_i = gl.full([BQ], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([BQ], gl.float32, gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BQ, HEAD_DIM], gl.float32, o_layout)
    c = scale_log2e
    excess = gl.maximum(s0, s1) - gl.minimum(s0, s1)
    own_end = gl.where((s0 > s1) if LEAD else (s1 > s0), excess, 0)
    halved = excess + s_both
    mixed = halved + 2 * gl.minimum(s0, s1)
    acc, m_i, l_i, phases = _region(excess - own_end, halved, own_end, base, acc, m_i, l_i, phases, c, rows, q_smem, k_smem,
                                    v_smem, bars, empty, codes, BQ, BK, SLOTS, STAGES, LEAD, False, False, s_layout,
                                    o_layout)
    # the halved steps' row statistics live in the layout of a half-width score tile
    m_h = gl.convert_layout(m_i, gl.SliceLayout(1, half_layout))
    l_h = gl.convert_layout(l_i, gl.SliceLayout(1, half_layout))
    acc, m_h, l_h, phases = _region(halved, mixed, own_end, base, acc, m_h, l_h, phases, c,
                                    gl.convert_layout(rows, gl.SliceLayout(1, half_layout)), q_smem, k_smem, v_smem,
                                    bars, empty, codes, BQ, BK, SLOTS, STAGES, LEAD, False, True, half_layout, o_layout)
    m_i = gl.convert_layout(m_h, gl.SliceLayout(1, s_layout))
    l_i = gl.convert_layout(l_h, gl.SliceLayout(1, s_layout))
    acc, m_i, l_i, phases = _region(mixed, n_ring, own_end, base, acc, m_i, l_i, phases, c, rows, q_smem, k_smem,
                                    v_smem, bars, empty, codes, BQ, BK, SLOTS, STAGES, LEAD, True, False, s_layout,
                                    o_layout)
    _store_rows(o_ptr, acc, l_i, N, b, h, qb, stride_ob, stride_oh, stride_on, HEAD_DIM, BQ, o_layout)
    return phases


@gluon.jit
def _tile(tile, counts_ptr, codes_ptr, HQ, GROUP, NQB, NCODE):
    """Tile `tile` of the split kernel: pair n_pairs - 1 - tile % n_pairs of query blocks (longest rows first) of
    batch x head tile // n_pairs (``_pair``)."""
    n_pairs = gl.cdiv(NQB, 2)
    return _pair(tile // n_pairs, n_pairs - 1 - tile % n_pairs, counts_ptr, codes_ptr, HQ, GROUP, NQB, NCODE)


@gluon.jit
def _pair(bh, pair, counts_ptr, codes_ptr, HQ, GROUP, NQB, NCODE):
    """Pair `pair` of query blocks of batch x head bh: b, h, kv head, the pair's first query block, its ring's
    codes and counts (steps in the ring, "both" steps, "only 0" steps, "only 1" steps)."""
    row = bh * gl.cdiv(NQB, 2) + pair
    h = bh % HQ
    return (bh // HQ, h, h // GROUP, 2 * pair, codes_ptr + row * NCODE, gl.load(counts_ptr + row * 4),
            gl.load(counts_ptr + row * 4 + 1), gl.load(counts_ptr + row * 4 + 2), gl.load(counts_ptr + row * 4 + 3))


@gluon.jit
def _split_consumer(q_ptr, o_ptr, q_smem, k_smem, v_smem, bars, empty, counts_ptr, codes_ptr, N, HQ, GROUP, NQB, NCODE,
                    n_tiles, scale_log2e, stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
                    tile_ids, tile_full, tile_empty, HEAD_DIM: gl.constexpr, BQ: gl.constexpr, BK: gl.constexpr,
                    SLOTS: gl.constexpr, STAGES: gl.constexpr, LEAD: gl.constexpr, s_layout: gl.constexpr,
                    half_layout: gl.constexpr, o_layout: gl.constexpr, io_l: gl.constexpr, DYNAMIC: gl.constexpr,
                    id_layout: gl.constexpr):
    """A consumer warpgroup of the split kernel: its query block of each of the program's tiles, in order; the
    ring's steps and the full barriers' phases run on from one tile to the next. DYNAMIC: the tiles are those
    the producer hands over (``_hand_tile``) until one past the last."""
    base = gl.program_id(0) * 0    # runtime ints, carried through the loop
    phases = base
    if DYNAMIC:
        i = base
        tile = _take_tile(tile_ids, tile_full, tile_empty, i, id_layout)
        while tile < n_tiles:
            b, h, kvh, qb0, codes, n_ring, s_both, s0, s1 = _tile(tile, counts_ptr, codes_ptr, HQ, GROUP, NQB, NCODE)
            phases = _split_tile_rows(q_ptr, o_ptr, q_smem, k_smem, v_smem, bars, empty, N, b, h,
                                      qb0 + (0 if LEAD else 1), codes, n_ring, s_both, s0, s1, base, phases,
                                      scale_log2e, stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
                                      HEAD_DIM, BQ, BK, SLOTS, STAGES, LEAD, s_layout, half_layout, o_layout, io_l)
            base += n_ring
            i += 1
            tile = _take_tile(tile_ids, tile_full, tile_empty, i, id_layout)
    else:   # one program per tile
        b, h, kvh, qb0, codes, n_ring, s_both, s0, s1 = _tile(gl.program_id(0), counts_ptr, codes_ptr, HQ, GROUP, NQB,
                                                              NCODE)
        _split_tile_rows(q_ptr, o_ptr, q_smem, k_smem, v_smem, bars, empty, N, b, h, qb0 + (0 if LEAD else 1), codes,
                         n_ring, s_both, s0, s1, base, phases, scale_log2e, stride_qb, stride_qh, stride_qn, stride_ob,
                         stride_oh, stride_on, HEAD_DIM, BQ, BK, SLOTS, STAGES, LEAD, s_layout, half_layout, o_layout,
                         io_l)


@gluon.jit
def _take_tile(tile_ids, tile_full, tile_empty, i, id_layout: gl.constexpr):
    """A consumer's i-th tile of a dynamic grid, from slot i % 2 of tile_ids once the producer filled it; the
    slot is released when both consumers read it."""
    slot = i % 2
    mbarrier.wait(tile_full.index(slot), (i // 2) & 1)
    tile = gl.max(tile_ids.index(slot).load(id_layout), axis=0)
    mbarrier.arrive(tile_empty.index(slot))
    return tile


@gluon.jit
def _hand_tile(tile, tile_ids, tile_full, tile_empty, i, id_layout: gl.constexpr):
    """The producer hands its i-th tile to the consumers through slot i % 2 of tile_ids (the first round of each
    slot passes at once: a fresh barrier's previous phase reads complete)."""
    slot = i % 2
    mbarrier.wait(tile_empty.index(slot), ((i // 2) & 1) ^ 1)
    tile_ids.index(slot).store(gl.zeros([1], gl.int32, id_layout) + tile)
    mbarrier.arrive(tile_full.index(slot))


@gluon.jit
def _split_producer(k_boxes, v_boxes, bars, empty, desc_k, desc_v, counts_ptr, codes_ptr, HQ, GROUP, NQB, NCODE, n_tiles,
                    counter_ptr, tile_ids, tile_full, tile_empty, BK: gl.constexpr, STAGES: gl.constexpr,
                    NCH: gl.constexpr, SLOTS: gl.constexpr, DYNAMIC: gl.constexpr, id_layout: gl.constexpr):
    """The split kernel's producer warp: every step of each of the program's tiles into the next free stage of
    the ring. DYNAMIC: the program's first tile is its id, each next one the grid size plus a ticket of the
    global counter, taken once this tile's last copies are issued, so that the tiles in flight stay a window of
    consecutive tiles (a static persistent grid's programs drift apart and lose the L2: 63% L2 hits against 90%)."""
    base = gl.program_id(0) * 0
    if DYNAMIC:
        i = base
        tile = gl.program_id(0)
        _hand_tile(tile, tile_ids, tile_full, tile_empty, i, id_layout)
        while tile < n_tiles:
            b, h, kvh, qb0, codes, n_ring, s_both, s0, s1 = _tile(tile, counts_ptr, codes_ptr, HQ, GROUP, NQB, NCODE)
            _produce_steps(k_boxes, v_boxes, bars, empty, desc_k, desc_v, b, kvh, codes, codes, 0, 0, 0, n_ring, BK,
                           STAGES, NCH, True, SLOTS, True, s_both, s0, s1, False, base)
            base += n_ring
            i += 1
            tile = gl.num_programs(0) + gl.atomic_add(counter_ptr, 1)
            _hand_tile(tile, tile_ids, tile_full, tile_empty, i, id_layout)
    else:   # one program per tile
        b, h, kvh, qb0, codes, n_ring, s_both, s0, s1 = _tile(gl.program_id(0), counts_ptr, codes_ptr, HQ, GROUP, NQB,
                                                              NCODE)
        _produce_steps(k_boxes, v_boxes, bars, empty, desc_k, desc_v, b, kvh, codes, codes, 0, 0, 0, n_ring, BK,
                       STAGES, NCH, True, SLOTS, True, s_both, s0, s1, False, base)


@gluon.jit
def _union_shared(desc_k, desc_v, BQ: gl.constexpr, HEAD_DIM: gl.constexpr, KEYS: gl.constexpr,
                  STAGES: gl.constexpr, KINDS: gl.constexpr):
    """Shared memory of the union kernels: both consumers' q, the ring's K and V stages of KEYS keys (also seen
    as TMA boxes, ``_issue_loads``), KINDS full barriers per stage and one empty barrier per stage that both
    consumers release it through, initialized."""
    dtype: gl.constexpr = desc_k.dtype
    q_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BQ, HEAD_DIM], dtype)
    tile_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([KEYS, HEAD_DIM], dtype)
    box_shape: gl.constexpr = [KEYS // desc_k.block_type.shape[2] * HEAD_DIM // 64 * STAGES] + desc_k.block_type.shape
    q0 = gl.allocate_shared_memory(dtype, [BQ, HEAD_DIM], q_l)
    q1 = gl.allocate_shared_memory(dtype, [BQ, HEAD_DIM], q_l)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, KEYS, HEAD_DIM], tile_l)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, KEYS, HEAD_DIM], tile_l)
    k_boxes = _reinterpret(k_smem, dtype, box_shape, desc_k.layout)
    v_boxes = _reinterpret(v_smem, dtype, box_shape, desc_v.layout)
    bars = gl.allocate_shared_memory(gl.int64, [KINDS * STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(KINDS * STAGES):
        mbarrier.init(bars.index(i), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(empty.index(i), count=2)   # a stage is free once both consumers are done with it
    return q0, q1, k_smem, v_smem, k_boxes, v_boxes, bars, empty


@gluon.jit
def _release_barriers(bars, empty, STAGES: gl.constexpr, KINDS: gl.constexpr):
    """Invalidate a ring's KINDS full barriers per stage and its empty ones at the program's end."""
    for i in gl.static_range(KINDS * STAGES):
        mbarrier.invalidate(bars.index(i))
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(empty.index(i))


@gluon.jit
def _attend_gluon_split_kernel(
    q_ptr, desc_k, desc_v, o_ptr, counts_ptr, codes_ptr,
    N, HQ, GROUP, NQB, NCODE, scale_log2e,
    stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on, n_tiles, counter_ptr,
    HEAD_DIM: gl.constexpr, BQ: gl.constexpr, BK: gl.constexpr, SLOTS: gl.constexpr, STAGES: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr, num_warps: gl.constexpr, DYNAMIC: gl.constexpr = False,
):
    """The union ring with its "only" steps halved (``blocks.UnionSteps`` with split; tiles gluon_split and, with
    DYNAMIC, gluon_split_p): after
    the excess steps (the longer "only" group's, computed by its consumer alone) both consumers compute every
    step, each its own half of the halved ones, so that neither holds two stages while the other computes. A
    program runs one tile (pair of query blocks, ``_tile``), or with DYNAMIC (a persistent grid) one after the
    other: the producer takes each next tile from a global counter (counter_ptr, int32, zero at launch) and
    hands it to the consumers through shared memory, and fills its first stages while the consumers finish the
    last one."""
    s_layout: gl.constexpr = _mma_layout(SLOTS * BK, num_warps)
    half_layout: gl.constexpr = _mma_layout(SLOTS * BK // 2, num_warps)
    o_layout: gl.constexpr = _mma_layout(HEAD_DIM, num_warps)
    io_l: gl.constexpr = _io_layout(HEAD_DIM, num_warps)
    NCH: gl.constexpr = HEAD_DIM // 64
    q0, q1, k_smem, v_smem, k_boxes, v_boxes, bars, empty = _union_shared(desc_k, desc_v, BQ, HEAD_DIM, SLOTS * BK,
                                                                          STAGES, 3)   # kinds 0, 1, 2
    if DYNAMIC:   # the tile ids handed from the producer to the consumers, two slots
        tile_ids = gl.allocate_shared_memory(gl.int32, [2, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        tile_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        tile_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(2):
            mbarrier.init(tile_full.index(i), count=1)
            mbarrier.init(tile_empty.index(i), count=2)
    else:         # unused
        tile_ids = bars
        tile_full = bars
        tile_empty = bars
    ids_c: gl.constexpr = gl.BlockedLayout([1], [32], [num_warps], [0])
    ids_p: gl.constexpr = gl.BlockedLayout([1], [32], [1], [0])
    gl.warp_specialize([
        (_split_consumer, (q_ptr, o_ptr, q0, k_smem, v_smem, bars, empty, counts_ptr, codes_ptr, N, HQ, GROUP, NQB, NCODE,
                           n_tiles, scale_log2e, stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
                           tile_ids, tile_full, tile_empty, HEAD_DIM, BQ, BK, SLOTS, STAGES, True, s_layout,
                           half_layout, o_layout, io_l, DYNAMIC, ids_c)),
        (_split_consumer, (q_ptr, o_ptr, q1, k_smem, v_smem, bars, empty, counts_ptr, codes_ptr, N, HQ, GROUP, NQB, NCODE,
                           n_tiles, scale_log2e, stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
                           tile_ids, tile_full, tile_empty, HEAD_DIM, BQ, BK, SLOTS, STAGES, False, s_layout,
                           half_layout, o_layout, io_l, DYNAMIC, ids_c)),
        (_split_producer, (k_boxes, v_boxes, bars, empty, desc_k, desc_v, counts_ptr, codes_ptr, HQ, GROUP, NQB, NCODE,
                           n_tiles, counter_ptr, tile_ids, tile_full, tile_empty, BK, STAGES, NCH, SLOTS, DYNAMIC,
                           ids_p)),
    ], [num_warps, 1], [CONSUMER_REGS, PRODUCER_REGS])
    _release_barriers(bars, empty, STAGES, 3)
    if DYNAMIC:
        _release_barriers(tile_full, tile_empty, 2, 1)


def _descriptor(x, box_keys, name):
    """TMA descriptor of K or V (name) [B, Hkv, N, D]: one box of box_keys keys, zero-filled past N."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from .attend_kernel import _tma_compatible
    if not _tma_compatible(x):
        raise ValueError(f"the Gluon computation pass copies {name} by TMA: it needs a 16-byte aligned base and "
                         f"strides, got strides {tuple(x.stride())} at address {x.data_ptr():#x}")
    elem = gl.bfloat16 if x.dtype == torch.bfloat16 else gl.float16
    box = [1, 1, box_keys, 64]   # one 64-column chunk of a 128-byte swizzled tile
    layout = gl.NVMMASharedLayout.get_default_for(box, elem)
    return TensorDescriptor(x, list(x.shape), list(x.stride()), box, layout)


def _check_shapes(q, config):
    bq, bk, head_dim = config.block_q, config.block_k, q.shape[-1]
    if bq != 64 or bk != 32 or head_dim not in (64, 128):
        raise ValueError(f"the Gluon computation pass needs block_q 64 (one warpgroup), block_k 32 (the measured "
                         f"shape) and head dim 64 or 128, got block_q={bq}, block_k={bk}, head dim {head_dim}")


def _kernel_args(q, k, out, config, list_len):
    """The kernels' scalar arguments: N, HQ, GROUP, NQB, the length of a row of step lists, the softmax scale
    times log2 e, and q's and out's batch, head and row strides."""
    batch, hq, seq_len, head_dim = q.shape
    return (seq_len, hq, hq // k.shape[1], -(-seq_len // config.block_q), list_len,
            config.scale_for(head_dim) * math.log2(math.e),
            q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2))


def attend_union_gluon(q, k, v, union, config, slots: int = 4, stages: int = 3, consumer_regs: int = 240,
                       persistent: bool = True, programs: int | None = None):
    """The computation pass over the union steps of pairs of query blocks (``blocks.UnionSteps`` made with split,
    from ``attend_kernel.kept_to_union``) in Gluon, Hopper only: FlashAttention-3's two consumer warpgroups and one
    producer warp per program, slots key blocks per step, stages K/V tiles in shared memory. Each consumer skips
    the steps only the other one keeps; the "only" steps after the excess are halved, each consumer computing its
    half of every one of them. persistent: one program per SM, each taking pairs from a global counter (allocated
    here, an int32 zero) until none is left (else one program per pair); programs (with persistent): the grid's
    size instead of the SM count (at most one runs per SM; fewer leave SMs idle, which times a program with less
    L2 traffic around it).

    q: [B, Hq, N, D] bf16 or fp16; k, v: [B, Hkv, N, D], the same dtype, 16-byte aligned strides (TMA).
    Returns [B, Hq, N, D] in v's dtype."""
    _check_shapes(q, config)
    if union.slots != slots or stages < 3 or not union.split:
        raise ValueError(f"the union steps hold {union.slots} blocks per step, the kernel was asked for {slots}; "
                         f"stages must be >= 3 (the consumers' steps alternate), got {stages}; the union steps must "
                         f"be made with split, got split={union.split}")
    if programs is not None and (not persistent or programs < 1):
        raise ValueError(f"programs (the persistent grid's size) needs persistent and must be >= 1, got "
                         f"programs={programs}, persistent={persistent}")
    batch, hq, seq_len, head_dim = q.shape
    desc_k, desc_v = _descriptor(k, config.block_k, "k"), _descriptor(v, config.block_k, "v")
    out = torch.empty(q.shape, dtype=v.dtype, device=q.device)
    args = (q, desc_k, desc_v, out, union.counts, union.codes, *_kernel_args(q, k, out, config, union.codes.shape[-1]))
    n_tiles = union.counts.shape[-2] * batch * hq
    grid, counter = n_tiles, union.counts   # one program per pair (the counter is not read)
    if persistent:   # one program per SM, taking pairs from a counter (a static deal loses the L2)
        grid = min(n_tiles, programs or torch.cuda.get_device_properties(q.device).multi_processor_count)
        counter = torch.zeros(1, dtype=torch.int32, device=q.device)
    _attend_gluon_split_kernel[(grid,)](
        *args, n_tiles, counter, HEAD_DIM=head_dim, BQ=config.block_q, BK=config.block_k, SLOTS=slots,
        STAGES=stages, CONSUMER_REGS=consumer_regs, PRODUCER_REGS=24, num_warps=4, DYNAMIC=persistent)
    return out
