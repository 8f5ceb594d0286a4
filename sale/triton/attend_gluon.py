"""Stage 3 on Hopper in Gluon: the split form's steps with the softmax of one step under the tensor cores.

Why a second implementation of the computation pass: Triton 3.6 waits on each wgmma of the Triton kernel
(``attend_kernel._attend_steps_kernel``) right after issuing it, so within a program the tensor cores idle
while the softmax runs, and only the other programs on the SM fill that time (NOTES.md, runs 24 and 27: a
64-key step at ~0.8 of cuDNN). Gluon, the explicit-layout dialect shipped inside Triton, lets one warpgroup
say what FlashAttention-3's intra-warpgroup pipelining says:

- step t's q . k and step t-1's p . v are issued asynchronously back to back; the kernel waits for the first
  only, and computes step t's softmax while p . v runs;
- every step is a 64-key tile of two 32-key blocks (a full pair, two lone blocks, or a lone block twice with
  its second half masked), copied by TMA into a ring of STAGES shared-memory stages and tracked by one
  mbarrier per stage, issued STAGES - 1 steps ahead; so lone blocks run at the speed of full pairs;
- unmasked steps (full pairs, lone pairs: every key before the query block's first row, both halves kept)
  run first with no mask; the odd lone block and the pairs reaching the first row run last, masked.

Same steps as the Triton split form (``blocks.KeptSteps`` from ``attend_kernel.kept_to_steps``), same
online softmax in float32 (scale inside exp2's argument). One program per (query block, query head), longest
rows first, 4 warps (one warpgroup of 64 rows). With WS a fifth warp (gl.warp_specialize) issues the copies
and the consumers release each stage through a second mbarrier ring. Gluon compiles for a GPU only: not in
the interpreter (CI compiles it for sm_90: ``python -m profiler sass-loop --kernel attend --tile gluon``).

Measured (NOTES.md, run 31): correct on the H100, but slower than the Triton split form at every density.
Without WS, Triton's shared-memory analysis puts a CTA barrier before every TMA copy (10 per step, 550
instructions per step against the Triton kernel's 355; both fit 2 programs per SM by shared memory). With WS the consumer
loop is 306 instructions with 2 barriers, but the consumer warpgroup takes 256 registers, so one program
runs per SM and nothing hides its softmax but its own p . v. The form that should win is two consumer
warpgroups (two query blocks) per program fed by one producer warp, FlashAttention-3's ping-pong; not built.
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
                 BK: gl.constexpr, STAGES: gl.constexpr, NCH: gl.constexpr):
    """TMA copies of step u's K and V into stage u % STAGES; nothing past the last step. A [2 * BK, HEAD_DIM]
    stage tile with 128-byte swizzling is stored as HEAD_DIM / 64 column chunks of [2 * BK, 64], so each
    block's chunk is one [BK, 64] box: box (stage, chunk c, half h) = (stage * NCH + c) * 2 + h."""
    ok = u < n_steps
    blk_a, blk_b, flags = _step_blocks(gl.maximum(gl.minimum(u, n_steps - 1), 0), step_base, back, n_full, n_lp, n_single)
    bar = bars.index(u % STAGES)
    mbarrier.expect(bar, 2 * NCH * (desc_k.block_type.nbytes + desc_v.block_type.nbytes), pred=ok)
    for c in gl.static_range(NCH):
        box = ((u % STAGES) * NCH + c) * 2
        _tma_load(desc_k, [b, kvh, blk_a * BK, 64 * c], bar, k_boxes.index(box), pred=ok)
        _tma_load(desc_k, [b, kvh, blk_b * BK, 64 * c], bar, k_boxes.index(box + 1), pred=ok)
        _tma_load(desc_v, [b, kvh, blk_a * BK, 64 * c], bar, v_boxes.index(box), pred=ok)
        _tma_load(desc_v, [b, kvh, blk_b * BK, 64 * c], bar, v_boxes.index(box + 1), pred=ok)


@gluon.jit
def _softmax_step(s, m_i, l_i, c, rows, blk_a, blk_b, flags, MASKED: gl.constexpr, BK: gl.constexpr,
                  s_layout: gl.constexpr):
    """Online softmax of one 2 * BK key tile of raw scores s (float32, [BQ, 2 * BK]): p (float32), the new
    row maximum (in exp2 units, times c = scale * log2 e), the accumulator's rescale factor and row sum.
    MASKED: columns of a half whose flag is clear and keys after each row score -inf."""
    if MASKED:
        col = gl.arange(0, 2 * BK, layout=gl.SliceLayout(0, s_layout))
        half = col // BK
        keys = gl.where(half == 0, blk_a, blk_b) * BK + col % BK
        ok = ((flags >> half) & 1) != 0
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
def _pipelined_step(t, n_steps, acc, p_prev, s_dead, m_i, l_i, c, rows, q_smem, k_smem, v_smem, k_boxes, v_boxes, bars,
                    empty, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp, n_single, MASKED: gl.constexpr,
                    BK: gl.constexpr, STAGES: gl.constexpr, NCH: gl.constexpr, WS: gl.constexpr,
                    s_layout: gl.constexpr, o_layout: gl.constexpr):
    """Step t: q . k_t and p_{t-1} . v_{t-1} in flight together, step t's softmax under the second. STAGES = 3:
    steps t and t - 1 are being read, the third stage is refilled one step ahead."""
    s_idx = t % STAGES
    mbarrier.wait(bars.index(s_idx), (t // STAGES) & 1)
    s_tok = warpgroup_mma(q_smem, k_smem.index(s_idx).permute((1, 0)), s_dead, use_acc=False, is_async=True)
    o_tok = warpgroup_mma(p_prev, v_smem.index((t - 1) % STAGES), acc, is_async=True)
    if not WS:
        # while both run: step t + STAGES - 2 into the stage of step t - 2, whose p . v every warp waited for in
        # the previous step (the CTA barrier makes that true of all four warps)
        _cta_barrier()
        _issue_loads(t + STAGES - 2, n_steps, k_boxes, v_boxes, bars, desc_k, desc_v, b, kvh, step_base, back,
                     n_full, n_lp, n_single, BK, STAGES, NCH)
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s_tok,))
    blk_a, blk_b, flags = _step_blocks(t, step_base, back, n_full, n_lp, n_single)
    p, m_i, alpha, l_i = _softmax_step(s, m_i, l_i, c, rows, blk_a, blk_b, flags, MASKED, BK, s_layout)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok,))
    if WS:  # the producer warp may refill the stage of step t - 1
        mbarrier.arrive(empty.index((t - 1) % STAGES))
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    p_op = gl.convert_layout(p.to(v_smem.dtype), gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2))
    return acc, p_op, s, m_i, l_i


@gluon.jit
def _produce_steps(k_boxes, v_boxes, bars, empty, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp, n_single,
                   n_steps, BK: gl.constexpr, STAGES: gl.constexpr, NCH: gl.constexpr):
    """The producer warp (WS): every step's TMA copies, each into a stage the consumers released (empty
    barrier; the first round of each stage passes at once: a fresh barrier's previous phase reads complete)."""
    for u in range(n_steps):
        mbarrier.wait(empty.index(u % STAGES), ((u // STAGES) & 1) ^ 1)
        _issue_loads(u, n_steps, k_boxes, v_boxes, bars, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp,
                     n_single, BK, STAGES, NCH)


@gluon.jit
def _attend_rows(q_ptr, o_ptr, q_smem, k_smem, v_smem, k_boxes, v_boxes, bars, empty, desc_k, desc_v, N, b, h, kvh, qb,
                 step_base, back, n_full, n_lp, n_single, n_steps, scale_log2e, stride_qb, stride_qh, stride_qn,
                 stride_ob, stride_oh, stride_on, HEAD_DIM: gl.constexpr, BQ: gl.constexpr, BK: gl.constexpr,
                 STAGES: gl.constexpr, NCH: gl.constexpr, WS: gl.constexpr, s_layout: gl.constexpr,
                 o_layout: gl.constexpr, io_l: gl.constexpr):
    """The consumer warpgroup: q into shared memory, every step (the first alone, then unmasked, then masked
    ones pipelined), the output rows."""
    dtype: gl.constexpr = q_smem.dtype
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    n_unmasked = n_full + n_lp
    qr = qb * BQ + gl.arange(0, BQ, layout=gl.SliceLayout(1, io_l))
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, io_l))
    q = gl.load(q_ptr + b * stride_qb + h * stride_qh + qr[:, None] * stride_qn + d[None, :],
                mask=(qr < N)[:, None], other=0.0)
    q_smem.store(q)
    fence_async_shared()
    _cta_barrier()

    rows = qb * BQ + gl.arange(0, BQ, layout=row_l)
    c = scale_log2e
    m_i = gl.full([BQ], float("-inf"), gl.float32, row_l)
    l_i = gl.zeros([BQ], gl.float32, row_l)
    acc = gl.zeros([BQ, HEAD_DIM], gl.float32, o_layout)
    s_dead = gl.zeros([BQ, 2 * BK], gl.float32, s_layout)

    # step 0 alone (masked form: it may be any kind of step)
    has_steps = n_steps > 0
    mbarrier.wait(bars.index(0), 0, pred=has_steps)
    s_tok = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_dead, use_acc=False, is_async=True)
    s_dead = warpgroup_mma_wait(num_outstanding=0, deps=(s_tok,))
    blk_a, blk_b, flags = _step_blocks(0, step_base, back, n_full, n_lp, n_single)
    p, m_i, alpha, l_i = _softmax_step(s_dead, m_i, l_i, c, rows, blk_a, blk_b, flags, True, BK, s_layout)
    p_op = gl.convert_layout(p.to(dtype), gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2))

    for t in range(1, n_unmasked):
        acc, p_op, s_dead, m_i, l_i = _pipelined_step(
            t, n_steps, acc, p_op, s_dead, m_i, l_i, c, rows, q_smem, k_smem, v_smem, k_boxes, v_boxes, bars, empty,
            desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp, n_single, False, BK, STAGES, NCH, WS,
            s_layout, o_layout)
    for t in range(gl.maximum(n_unmasked, 1), n_steps):
        acc, p_op, s_dead, m_i, l_i = _pipelined_step(
            t, n_steps, acc, p_op, s_dead, m_i, l_i, c, rows, q_smem, k_smem, v_smem, k_boxes, v_boxes, bars, empty,
            desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp, n_single, True, BK, STAGES, NCH, WS,
            s_layout, o_layout)
    last = gl.maximum(n_steps - 1, 0)
    o_tok = warpgroup_mma(p_op, v_smem.index(last % STAGES), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(o_tok,))

    l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
    out = acc / gl.where(l_o > 0, l_o, 1.0)[:, None]
    out = gl.where(has_steps, out, 0.0)
    orow = qb * BQ + gl.arange(0, BQ, layout=gl.SliceLayout(1, o_layout))
    od = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    gl.store(o_ptr + b * stride_ob + h * stride_oh + orow[:, None] * stride_on + od[None, :],
             out.to(o_ptr.dtype.element_ty), mask=(orow < N)[:, None])


@gluon.jit
def _attend_gluon_kernel(
    q_ptr, desc_k, desc_v, o_ptr, counts_ptr, steps_ptr,
    N, HQ, GROUP, NQB, NPB, scale_log2e,
    stride_qb, stride_qh, stride_qn, stride_ob, stride_oh, stride_on,
    HEAD_DIM: gl.constexpr, BQ: gl.constexpr, BK: gl.constexpr, STAGES: gl.constexpr, WS: gl.constexpr,
    WS_REGS: gl.constexpr, num_warps: gl.constexpr,
):
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, 2 * BK, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    io_l: gl.constexpr = gl.BlockedLayout([1, 8], [32 * 8 // HEAD_DIM, HEAD_DIM // 8], [num_warps, 1], [1, 0])
    dtype: gl.constexpr = desc_k.dtype
    tile_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([2 * BK, HEAD_DIM], dtype)
    NCH: gl.constexpr = HEAD_DIM // 64      # 64-column chunks of a 128-byte swizzled 16-bit tile

    qb = NQB - 1 - gl.program_id(0)   # longest rows first
    bh = gl.program_id(1)
    b = bh // HQ
    h = bh % HQ
    kvh = h // GROUP
    row = bh * NQB + qb
    n_full = gl.load(counts_ptr + row * 3)
    n_single = gl.load(counts_ptr + row * 3 + 1)
    n_tail = gl.load(counts_ptr + row * 3 + 2)
    n_lp = n_single // 2
    n_steps = n_full + n_lp + (n_single & 1) + n_tail
    step_base = steps_ptr + row * NPB
    back = step_base + NPB - 1

    # shared memory: q once, K and V in a ring of STAGES 2 * BK key tiles (seen also as TMA boxes), one TMA
    # barrier per stage, and with WS one barrier per stage that the consumers arrive on when it is free
    q_smem = gl.allocate_shared_memory(dtype, [BQ, HEAD_DIM], gl.NVMMASharedLayout.get_default_for([BQ, HEAD_DIM], dtype))
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, 2 * BK, HEAD_DIM], tile_l)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, 2 * BK, HEAD_DIM], tile_l)
    box_shape: gl.constexpr = [2 * NCH * STAGES] + desc_k.block_type.shape
    k_boxes = _reinterpret(k_smem, dtype, box_shape, desc_k.layout)
    v_boxes = _reinterpret(v_smem, dtype, box_shape, desc_v.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    if WS:
        gl.warp_specialize([
            (_attend_rows, (q_ptr, o_ptr, q_smem, k_smem, v_smem, k_boxes, v_boxes, bars, empty, desc_k, desc_v, N, b,
                            h, kvh, qb, step_base, back, n_full, n_lp, n_single, n_steps, scale_log2e, stride_qb,
                            stride_qh, stride_qn, stride_ob, stride_oh, stride_on, HEAD_DIM, BQ, BK, STAGES, NCH, WS,
                            s_layout, o_layout, io_l)),
            (_produce_steps, (k_boxes, v_boxes, bars, empty, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp,
                              n_single, n_steps, BK, STAGES, NCH)),
        ], [1], [WS_REGS])
    else:
        for i in gl.static_range(STAGES - 1):   # steps 0 .. STAGES - 2; step t issues step t + STAGES - 2
            _issue_loads(i, n_steps, k_boxes, v_boxes, bars, desc_k, desc_v, b, kvh, step_base, back, n_full, n_lp,
                         n_single, BK, STAGES, NCH)
        _attend_rows(q_ptr, o_ptr, q_smem, k_smem, v_smem, k_boxes, v_boxes, bars, empty, desc_k, desc_v, N, b, h, kvh,
                     qb, step_base, back, n_full, n_lp, n_single, n_steps, scale_log2e, stride_qb, stride_qh, stride_qn,
                     stride_ob, stride_oh, stride_on, HEAD_DIM, BQ, BK, STAGES, NCH, WS, s_layout, o_layout, io_l)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))
        mbarrier.invalidate(empty.index(i))


def _descriptor(x, box_keys):
    """TMA descriptor of K or V [B, Hkv, N, D]: one box of box_keys keys, zero-filled past N."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    elem = gl.bfloat16 if x.dtype == torch.bfloat16 else gl.float16
    box = [1, 1, box_keys, 64]   # one 64-column chunk of a 128-byte swizzled tile
    layout = gl.NVMMASharedLayout.get_default_for(box, elem)
    return TensorDescriptor(x, list(x.shape), list(x.stride()), box, layout)


def attend_steps_gluon(q, k, v, steps, config, stages: int = 3, warp_specialize: bool = False, ws_regs: int = 40,
                       maxnreg: int | None = None):
    """The computation pass over the split form's steps (``blocks.KeptSteps``) in Gluon, Hopper only.

    q: [B, Hq, N, D] bf16 or fp16; k, v: [B, Hkv, N, D], the same dtype, 16-byte aligned strides (TMA);
    steps: from ``attend_kernel.kept_to_steps`` for ``config``'s blocks. Returns [B, Hq, N, D] in v's dtype."""
    batch, hq, seq_len, head_dim = q.shape
    bq, bk = config.block_q, config.block_k
    if bq != 64 or bk != 32 or head_dim not in (64, 128):
        raise ValueError(f"the Gluon computation pass needs block_q 64 (one warpgroup), block_k 32 (the measured "
                         f"shape) and head dim 64 or 128, got block_q={bq}, block_k={bk}, head dim {head_dim}")
    if stages < (2 if warp_specialize else 3):
        raise ValueError(f"stages must be >= 3 (>= 2 with warp_specialize), got {stages}")
    desc_k, desc_v = _descriptor(k, bk), _descriptor(v, bk)
    nqb = -(-seq_len // bq)
    out = torch.empty(q.shape, dtype=v.dtype, device=q.device)
    _attend_gluon_kernel[(nqb, batch * hq)](
        q, desc_k, desc_v, out, steps.counts, steps.steps,
        seq_len, hq, hq // k.shape[1], nqb, steps.steps.shape[-1], config.scale_for(head_dim) * math.log2(math.e),
        q.stride(0), q.stride(1), q.stride(2), out.stride(0), out.stride(1), out.stride(2),
        HEAD_DIM=head_dim, BQ=bq, BK=bk, STAGES=stages, WS=warp_specialize, WS_REGS=ws_regs, num_warps=4,
        **({"maxnreg": maxnreg} if maxnreg else {}))
    return out
