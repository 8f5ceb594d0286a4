"""The selection pass's hot loop in Gluon (Triton's explicit-layout dialect), for Hopper only.

Why a second implementation of one loop: Triton 3.6 waits on every non-accumulating wgmma right
after issuing it, so the per-element epilogue (int -> float, times sq_i sk_j, plus qmk_j, max per
key block) never overlaps a tensor-core instruction, and its layout conversions add 9 CTA barriers
per tile (NOTES.md, session 2). Gluon lets the kernel say what it means:
- the next key tile's 8-bit wgmma is issued asynchronously before this tile's epilogue, so the
  tensor cores run under the epilogue (two accumulators in flight);
- the epilogue runs in the accumulator's own layout (sk_j and qmk_j are loaded straight into its
  column layout), the max over a key block stays inside a thread and a quad, and the max over a
  query block's rows stays inside each warp;
- each warp ORs its keep bits into a bitmask word with one relaxed atomic, so no per-tile CTA
  reduction is needed: the 4 warps of a 64-row query block meet in the atomic, not in a barrier.
The statistics (t_i) come before and the whole-row pass (flags, bool mask, kept list) after, from
``select_kernel._select_kernel``'s other phases. Same mask as the Triton kernel: the same float32
operations in the same order per element, and max commutes with the order of the reduction.

Not available in the interpreter (Gluon compiles for a GPU only); CI compiles it for sm_90.
"""
import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait

# cp.async global -> shared: `async_load` from Triton 3.7 on, `async_copy_global_to_shared` before
_cp_async = getattr(async_copy, "async_load", None) or async_copy.async_copy_global_to_shared
# CTA barrier: `barrier` from Triton 3.7 on, `thread_barrier` before
_cta_barrier = getattr(gl, "barrier", None) or gl.thread_barrier


@gluon.jit
def _copy_k_tile(dst, khat_base, n0, N, pred, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr,
                 layout: gl.constexpr):
    """cp.async of keys n0 .. n0 + BLOCK_N of k_hat [N, HEAD_DIM] int8 into dst (16 bytes per copy)."""
    keys = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, layout))
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    ok = (keys < N) & pred
    _cp_async(dst, khat_base + keys[:, None] * HEAD_DIM + d[None, :], mask=ok[:, None])


@gluon.jit
def _tile_epilogue(acc, sk, qmk, t, valid, sq, t_row, bits_base, qg, NQB, NW, BQS: gl.constexpr,
                   QBP: gl.constexpr, GR: gl.constexpr, BK: gl.constexpr, BLOCK_M: gl.constexpr,
                   BLOCK_N: gl.constexpr):
    """Keep bits of tile t: s_hat = dot * sq_i * sk_j + qmk_j (the reference's order), max over each
    key block per row, minus t_i, max over each warp's rows of one query block, OR into the bitmask.
    Keys past N hold the next head's values or the buffers' padding (quantize_kernel.KEY_PAD): they
    only reach blocks that are never candidates (candidates end a local window before their query block)."""
    NB_T: gl.constexpr = BLOCK_N // BK
    val = acc.to(gl.float32) * sq[:, None] * sk[None, :] + qmk[None, :]
    row_max = gl.max(gl.reshape(val, [BLOCK_M, NB_T, BK]), axis=2)                   # [BLOCK_M, NB_T]
    margin = row_max - gl.convert_layout(t_row, gl.SliceLayout(1, row_max.type.layout))[:, None]
    warp_max = gl.max(gl.reshape(margin, [BLOCK_M // GR, GR, NB_T]), axis=1)         # [BLOCK_M // GR, NB_T]
    kb = gl.arange(0, NB_T, layout=gl.SliceLayout(0, warp_max.type.layout))
    word = gl.sum((warp_max > 0).to(gl.int32) << kb[None, :], axis=1)               # NB_T keep bits per row group
    g = gl.arange(0, BLOCK_M // GR, layout=gl.SliceLayout(1, warp_max.type.layout))
    qb = qg * QBP + (g * GR) // BQS
    c0 = t * NB_T
    gl.atomic_or(bits_base + qb * NW + c0 // 32, word << (c0 % 32), mask=(qb < NQB) & (word != 0) & valid,
                 sem="relaxed")


@gluon.jit
def _estimate_kernel(
    qhat_ptr, khat_ptr, sq_ptr, sk_ptr, qmk_ptr, trow_ptr, bits_ptr,
    N, HQ, GROUP, NQB, NW, WINDOW,
    HEAD_DIM: gl.constexpr, BQ: gl.constexpr, BK: gl.constexpr, ROW_STRIDE: gl.constexpr,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, A_IN_REGS: gl.constexpr,
    num_warps: gl.constexpr,
):
    BQS: gl.constexpr = BQ // ROW_STRIDE          # estimated rows per query block
    QBP: gl.constexpr = BLOCK_M // BQS            # query blocks per program
    NB_T: gl.constexpr = BLOCK_N // BK            # key blocks per tile
    dot_t: gl.constexpr = qhat_ptr.dtype.element_ty  # int8, or float8e4nv holding the same integers
    acc_t: gl.constexpr = gl.int32 if dot_t == gl.int8 else gl.float32
    GR: gl.constexpr = 16 if BQS > 16 else BQS    # rows reduced in-warp: one block's rows, one warp's
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                  instr_shape=[16, BLOCK_N, 32])
    row_l: gl.constexpr = gl.SliceLayout(1, mma)
    col_l: gl.constexpr = gl.SliceLayout(0, mma)
    # 16 contiguous bytes per thread: one cp.async each, a 128-byte row per 8 threads
    copy_l: gl.constexpr = gl.BlockedLayout([1, 16], [32 * 16 // HEAD_DIM, HEAD_DIM // 16], [num_warps, 1], [1, 0])
    smem_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dot_t)

    n_groups = gl.cdiv(NQB, QBP)
    qg = n_groups - 1 - gl.program_id(0)          # longest rows first
    bh = gl.program_id(1)
    b = bh // HQ
    bkv = b * (HQ // GROUP) + (bh % HQ) // GROUP
    r = gl.arange(0, BLOCK_M, layout=row_l)
    rows = (qg * QBP + r // BQS) * BQ + (r % BQS) * ROW_STRIDE
    row_ok = rows < N
    sq = gl.load(sq_ptr + bh * N + rows, mask=row_ok, other=0.0)
    t_row = gl.load(trow_ptr + bh * N + rows, mask=row_ok, other=float("inf"))

    # candidate keys end where the last query block's local window starts (select_kernel._local_start_key)
    last_qb = gl.minimum(qg * QBP + QBP, NQB) - 1
    x = last_qb * BQ - WINDOW + 1
    cand_end = gl.where(x <= 0, 0, (gl.cdiv(x, BK) - 1) * BK)
    n_tiles = gl.cdiv(cand_end, BLOCK_N)

    # Q_hat: [BLOCK_M, HEAD_DIM] int8, once per program
    qr = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, copy_l))
    qrows = (qg * QBP + qr // BQS) * BQ + (qr % BQS) * ROW_STRIDE
    qd = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, copy_l))
    q_hat = gl.load(qhat_ptr + (bh * N + qrows)[:, None] * HEAD_DIM + qd[None, :],
                    mask=(qrows < N)[:, None])
    if A_IN_REGS:
        a = gl.convert_layout(q_hat, gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4))
    else:
        a = gl.allocate_shared_memory(dot_t, [BLOCK_M, HEAD_DIM],
                                      gl.NVMMASharedLayout.get_default_for([BLOCK_M, HEAD_DIM], dot_t), q_hat)

    k_smem = gl.allocate_shared_memory(dot_t, [STAGES, BLOCK_N, HEAD_DIM], smem_l)
    khat_base = khat_ptr + bkv * N * HEAD_DIM
    for s in gl.static_range(STAGES - 1):         # prologue: tiles 0 .. STAGES-2 in flight
        _copy_k_tile(k_smem.index(s), khat_base, s * BLOCK_N, N, s < n_tiles, HEAD_DIM, BLOCK_N, copy_l)
        async_copy.commit_group()
    async_copy.wait_group(STAGES - 2)
    _cta_barrier()
    fence_async_shared()
    acc_a = warpgroup_mma(a, k_smem.index(0).permute((1, 0)), gl.zeros([BLOCK_M, BLOCK_N], acc_t, mma),
                          use_acc=False, is_async=True)
    acc_a = warpgroup_mma_wait(num_outstanding=0, deps=(acc_a,))
    spare_b = gl.zeros([BLOCK_M, BLOCK_N], acc_t, mma)
    # Two accumulators, a (even tiles) and b (odd tiles): the next tile's MMA runs under this tile's
    # epilogue and is waited on within the iteration (an MMA still in flight at the loop's back edge
    # makes ptxas serialize every wgmma, C7514). Each MMA writes into the registers of the accumulator
    # whose epilogue just finished (its input is ignored: use_acc=False), so neither zero fills nor
    # loop-carried register moves are needed.
    sk_base = sk_ptr + bkv * N
    qmk_base = qmk_ptr + bh * N
    bits_base = bits_ptr + bh * NQB * NW
    keys = gl.arange(0, BLOCK_N, layout=col_l)
    sk_a = gl.load(sk_base + keys)
    qmk_a = gl.load(qmk_base + keys)
    for t in range(0, n_tiles, 2):
        # the per-key vectors of the next tile are loaded one epilogue ahead of their use
        sk_b = gl.load(sk_base + (t + 1) * BLOCK_N + keys)
        qmk_b = gl.load(qmk_base + (t + 1) * BLOCK_N + keys)
        pend_b = _issue_tile(a, k_smem, spare_b, t + 1, n_tiles, khat_base, N, HEAD_DIM, BLOCK_N, STAGES, copy_l)
        _tile_epilogue(acc_a, sk_a, qmk_a, t, True, sq, t_row, bits_base, qg, NQB, NW, BQS, QBP, GR, BK,
                       BLOCK_M, BLOCK_N)
        spare_b = warpgroup_mma_wait(num_outstanding=0, deps=(pend_b,))
        sk_a = gl.load(sk_base + (t + 2) * BLOCK_N + keys)
        qmk_a = gl.load(qmk_base + (t + 2) * BLOCK_N + keys)
        pend_a = _issue_tile(a, k_smem, acc_a, t + 2, n_tiles, khat_base, N, HEAD_DIM, BLOCK_N, STAGES, copy_l)
        _tile_epilogue(spare_b, sk_b, qmk_b, t + 1, t + 1 < n_tiles, sq, t_row, bits_base, qg, NQB, NW, BQS, QBP,
                       GR, BK, BLOCK_M, BLOCK_N)
        acc_a = warpgroup_mma_wait(num_outstanding=0, deps=(pend_a,))
    async_copy.wait_group(0)


@gluon.jit
def _issue_tile(a, k_smem, dead_acc, u, n_tiles, khat_base, N, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr,
                STAGES: gl.constexpr, copy_l: gl.constexpr):
    """Issue tile u's MMA into dead_acc's registers, after starting the copies of tile u+STAGES-2.
    Tile u is in shared memory once this thread's copies of it are done (groups commit in tile order)
    and every thread passed the barrier. The barrier also means every warpgroup has waited on tile
    u-1's MMA, so tile u-2's buffer, (u+STAGES-2) % STAGES, can be refilled. Tiles past n_tiles run
    on stale data and their epilogues store nothing."""
    async_copy.wait_group(STAGES - 3)
    _cta_barrier()
    _copy_k_tile(k_smem.index((u + STAGES - 2) % STAGES), khat_base, (u + STAGES - 2) * BLOCK_N, N,
                 u + STAGES - 2 < n_tiles, HEAD_DIM, BLOCK_N, copy_l)
    async_copy.commit_group()
    fence_async_shared()
    return warpgroup_mma(a, k_smem.index(u % STAGES).permute((1, 0)), dead_acc, use_acc=False, is_async=True)

def launch_estimate(quant, trow, bits, config, group, cfg):
    """OR the keep bits of every candidate block into bits [B*Hq, NQB, ceil(NKB/32)] int32 (zeroed by
    the caller), from the t_i in trow [B*Hq, N] float32. Returns the compiled kernel."""
    from .quantize_kernel import KEY_PAD, with_key_pad
    batch, hq, seq_len, head_dim = quant.q_hat.shape
    block_m, stride = 128, config.estimate_row_stride
    rows_per_block = config.block_q // stride
    if head_dim not in (64, 128):
        raise ValueError(f"the Gluon estimate needs head dim 64 or 128, got {head_dim}")
    if rows_per_block > block_m or cfg["block_n"] // config.block_k > 32 or 3 * cfg["block_n"] > KEY_PAD:
        raise ValueError(f"the Gluon estimate needs block_q / row stride <= {block_m}, block_n / block_k <= 32 "
                         f"and 3 * block_n <= {KEY_PAD} (its unmasked look-ahead past N)")
    nqb = bits.shape[1]
    grid = (-(-nqb // (block_m // rows_per_block)), batch * hq)
    q_hat, k_hat = quant.q_hat, quant.k_hat
    if cfg.get("fp8"):  # the same integers in e4m3 (exact for |x| <= 7): FP8 MMA, float32 accumulators
        q_hat, k_hat = q_hat.to(torch.float8_e4m3fn), k_hat.to(torch.float8_e4m3fn)
    return _estimate_kernel[grid](
        q_hat, k_hat, quant.q_scale, with_key_pad(quant.k_scale), with_key_pad(quant.qmk), trow, bits,
        seq_len, hq, group, nqb, bits.shape[-1], config.local_window,
        HEAD_DIM=head_dim, BQ=config.block_q, BK=config.block_k, ROW_STRIDE=stride, BLOCK_M=block_m,
        BLOCK_N=cfg["block_n"], STAGES=cfg["stages"], A_IN_REGS=cfg["a_in_regs"], num_warps=cfg["warps"],
        **({"maxnreg": cfg["maxnreg"]} if cfg.get("maxnreg") else {}))
