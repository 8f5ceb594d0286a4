"""Stage 2's estimate on Hopper in Gluon: the 8-bit MMAs and the per-element epilogue in different warps.

The portable Triton selection kernel (select_kernel.py) runs the estimate's MMA and its epilogue one after
the other in the same warps, so the epilogue (about 3.5 float operations per estimated score, as many issue
slots as the MMA takes tensor-core cycles) adds to the MMA's time instead of hiding under it. Here:

- one producer warp copies, by TMA, the 4-bit q of a work item (the ROWS estimated rows of each consumer)
  and then the item's candidate K tiles (BLOCK_N keys each, 4-bit values held exactly in e4m3) into a ring
  of STAGES shared-memory stages;
- four consumer warpgroups, each with its own ROWS (64) query rows, take every K tile: the K tile is the
  MMA's A operand (keys first: sk_j and qmk_j are per accumulator row, sq_i and t_i loop-invariant per
  column), and each consumer issues the next tile's MMA before it runs the vote of the previous one
  (``warpgroup_mma_wait(1)``), so one tile's epilogue runs under the next tile's MMA and under the other
  consumer's MMAs;
- the vote is ``select_kernel._vote_keys_first_step``'s: each thread takes the max over the keys it holds of
  each column's s_hat = dot * sq_i * sk_j + qmk_j (the same float operations as the reference), subtracts
  t_i, takes the max over its columns of each query block and sets the (query block, key block) flag itself
  (a predicated byte store), with no reduction across threads;
- a persistent grid (one program per SM) walks the (head, query tile) work items longest first.

The row thresholds t_i come from ``select_kernel._select_kernel`` with PHASE=1 before this kernel, and the
row pass (keep = always | (candidate & flag), the compact kept lists) with PHASE=2 after it, so the mask is
the Triton kernel's bit for bit: the same float operations in the same order.

Gluon compiles for a GPU only; CI compiles this kernel for sm_90 (``profiler sass-loop --kernel select-gluon``).
"""
import math

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (mbarrier, warpgroup_mma, warpgroup_mma_init,
                                                               warpgroup_mma_wait)

from ..blocks import KeptBlocks, num_blocks

from .attend_gluon import _reinterpret, _tma_load   # the Triton-version shims of the computation pass


@gluon.constexpr_function
def _acc_layout(rows, num_warps):
    """Register layout of an 8-bit wgmma result [64 keys, rows]: warp w holds keys 16w .. 16w + 15 (lane // 4 and
    lane // 4 + 8), each thread the columns 8c + 2 (lane % 4) + {0, 1}."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, rows, 32])


@gluon.jit
def _local_start_key(first_row, WINDOW, BK: gl.constexpr):
    """First key of the first local block of a query block starting at first_row (select_kernel's)."""
    x = first_row - WINDOW + 1
    return gl.where(x <= 0, 0, (gl.cdiv(x, BK) - 1) * BK)


@gluon.jit
def _work_item(w, BH, NQT, NR, WINDOW, BQ: gl.constexpr, BQS: gl.constexpr, BK: gl.constexpr,
               ITEM_ROWS: gl.constexpr, BLOCK_N: gl.constexpr):
    """Work item w: the (batch * head) index, the query tile (longest first: every head's last tile, then the
    tiles before) and its number of K tiles (the candidate keys of its last query block)."""
    qt = NQT - 1 - w // BH
    bh = w % BH
    last_qb = (gl.minimum((qt + 1) * ITEM_ROWS, NR) - 1) // BQS
    cand_end = _local_start_key(last_qb * BQ, WINDOW, BK)
    return bh, qt, gl.cdiv(cand_end, BLOCK_N)


@gluon.jit
def _set_flags(ptr, flag):
    """ptr[i] = 1 where flag[i], each thread for the elements it holds (select_kernel._set_flags): several
    threads may set the same byte, all to 1."""
    gl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $1, 0; @p st.global.u8 [$2], $3; mov.b32 $0, 0; }",
        "=r,r,l,r", [flag.to(gl.int32), ptr, flag.to(gl.int32)], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _fold_keys(x, ROWS: gl.constexpr):
    """[64 keys, ROWS] -> [4, 8, ROWS]: the max over the two keys each thread holds of each column
    (key 16w + 8r + lane // 4; r in-thread)."""
    return gl.max(gl.reshape(x, [4, 2, 8, ROWS]), axis=1)


@gluon.jit
def _fold_columns(x, ROWS: gl.constexpr, BQS: gl.constexpr):
    """[4, 8, ROWS] -> [4, 8, ROWS // BQS, 4]: the max over the columns each thread holds of each query block
    (column BQS * qb + 8c + 2 (lane % 4) + p; c and p in-thread)."""
    return gl.max(gl.max(gl.reshape(x, [4, 8, ROWS // BQS, BQS // 8, 4, 2]), axis=5), axis=3)


@gluon.jit
def _vote(acc, sq, t, sk, qmk, n0, flag_base, NKB, kb_rel, ROWS: gl.constexpr, BQS: gl.constexpr,
          BK: gl.constexpr, PROBE: gl.constexpr = 0, LAST: gl.constexpr = False):
    """Flags of one K tile's (query block, key block) pairs with some s_hat_ij > t_i, from its dot products acc
    [64 keys, ROWS] (float32, exact integers). flag_base: the mask row of the consumer's first query block;
    kb_rel [4, 8, ROWS // BQS, 4]: each held flag's offset from it (query block * NKB + key block in the tile);
    sk, qmk [64]: the tile's keys' scales and q_mean . k_s terms (``_issue`` loads them). PROBE 1 (timing probe,
    wrong masks): no vote."""
    if PROBE != 1:
        val = acc * sq[None, :] * sk[:, None] + qmk[:, None]
        key_max = _fold_keys(val, ROWS)
        t_b = gl.convert_layout(t, gl.SliceLayout(0, gl.SliceLayout(1, key_max.type.layout)))
        part = _fold_columns(key_max - t_b[None, None, :], ROWS, BQS)
        if LAST:   # only the last tile reaches past N, into key blocks that may not exist
            kb_in = _fold_columns(_fold_keys(gl.zeros_like(acc).to(gl.int32) + (
                gl.arange(0, 64, layout=gl.SliceLayout(1, acc.type.layout)) // BK)[:, None], ROWS), ROWS, BQS)
            _set_flags(flag_base + n0 // BK + kb_rel, (part > 0) & (n0 // BK + kb_in < NKB))
        else:
            _set_flags(flag_base + n0 // BK + kb_rel, part > 0)


@gluon.jit
def _issue(k_smem, sk_smem, qmk_smem, k_full, q_t, dead, u, acc_l: gl.constexpr, STAGES: gl.constexpr,
           PROBE: gl.constexpr = 0):
    """Once K tile u (the program's u-th) has arrived, its MMA with the consumer's q (dead: an accumulator whose
    value is no longer needed; use_acc=False), and its keys' sk_j and qmk_j read from the same stage while the MMA
    runs."""
    mbarrier.wait(k_full.index(u % STAGES), (u // STAGES) & 1)
    if PROBE == 2:   # timing probe (wrong masks): no MMA
        tok = warpgroup_mma_init(dead)
    else:
        tok = warpgroup_mma(k_smem.index(u % STAGES), q_t, dead, use_acc=False, is_async=True)
    key_l: gl.constexpr = gl.SliceLayout(1, acc_l)
    return tok, sk_smem.index(u % STAGES).load(key_l), qmk_smem.index(u % STAGES).load(key_l)


@gluon.jit
def _retire(tok, k_empty, u, STAGES: gl.constexpr):
    """The dot products of K tile u, its stage released."""
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(tok,))
    mbarrier.arrive(k_empty.index(u % STAGES))
    return acc


@gluon.jit
def _estimate_consumer(q_smem, k_smem, sk_smem, qmk_smem, k_full, k_empty, q_full, q_empty, sq_ptr, t_ptr,
                       mask_ptr, N, HQ, NQB, NKB, NR, WINDOW, n_work, NQT, ROW_STRIDE, C: gl.constexpr,
                       CONSUMERS: gl.constexpr, ROWS: gl.constexpr, BQ: gl.constexpr, BQS: gl.constexpr,
                       BK: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, num_warps: gl.constexpr,
                       PROBE: gl.constexpr):
    """Consumer C: the estimate of its ROWS rows of every work item this program takes, K tile by K tile: one
    accumulator, so that each tile's vote runs while the other consumers' MMAs hold the tensor cores (a second
    accumulator in flight does not fit the 168 registers a thread of a 12-warp program has: ptxas then spills
    and serializes the MMAs)."""
    acc_l: gl.constexpr = _acc_layout(ROWS, num_warps)
    col_l: gl.constexpr = gl.SliceLayout(0, acc_l)
    ITEM_ROWS: gl.constexpr = CONSUMERS * ROWS
    BH = n_work // NQT
    # each held flag's offset from the consumer's first (query block, key block): built once, folded like the scores
    kr = gl.arange(0, 64, layout=gl.SliceLayout(1, acc_l))
    cr = gl.arange(0, ROWS, layout=col_l)
    kb_rel = _fold_columns(_fold_keys((kr // BK)[:, None] + ((cr // BQS) * NKB)[None, :], ROWS), ROWS, BQS)
    acc = gl.zeros([64, ROWS], gl.float32, acc_l)
    g = 0       # K tiles consumed by this program (ring position)
    it = 0      # work items with K tiles taken by this program (q slot and phase)
    for w in range(gl.program_id(0), n_work, gl.num_programs(0)):
        bh, qt, n_tiles = _work_item(w, BH, NQT, NR, WINDOW, BQ, BQS, BK, ITEM_ROWS, BLOCK_N)
        if n_tiles > 0:
            er = qt * ITEM_ROWS + C * ROWS + cr                 # estimated rows (row er * ROW_STRIDE)
            row_ok = (er < NR) & (er * ROW_STRIDE < N)
            sq = gl.load(sq_ptr + bh * N + er * ROW_STRIDE, mask=row_ok, other=0.0)
            t = gl.load(t_ptr + bh * NR + er, mask=er < NR, other=float("inf"))
            flag_base = mask_ptr + (bh * NQB + (qt * ITEM_ROWS + C * ROWS) // BQS) * NKB
            slot = it % 2
            mbarrier.wait(q_full.index(slot), (it // 2) & 1)
            q_t = q_smem.index(CONSUMERS * slot + C).permute((1, 0))   # [D, ROWS], D contiguous: K-major
            for i in range(n_tiles - 1):
                tok, sk, qmk = _issue(k_smem, sk_smem, qmk_smem, k_full, q_t, acc, g + i, acc_l, STAGES, PROBE)
                acc = _retire(tok, k_empty, g + i, STAGES)
                _vote(acc, sq, t, sk, qmk, i * BLOCK_N, flag_base, NKB, kb_rel, ROWS, BQS, BK, PROBE)
            last = n_tiles - 1
            tok, sk, qmk = _issue(k_smem, sk_smem, qmk_smem, k_full, q_t, acc, g + last, acc_l, STAGES, PROBE)
            acc = _retire(tok, k_empty, g + last, STAGES)
            mbarrier.arrive(q_empty.index(slot))
            _vote(acc, sq, t, sk, qmk, last * BLOCK_N, flag_base, NKB, kb_rel, ROWS, BQS, BK, PROBE, True)
            g += n_tiles
            it += 1


@gluon.jit
def _estimate_producer(desc_q, desc_k, desc_sk, desc_qmk, q_boxes, k_boxes, sk_boxes, qmk_boxes, k_full, k_empty,
                       q_full, q_empty, N, HQ, GROUP, NR, WINDOW, n_work, NQT, CONSUMERS: gl.constexpr, ROWS: gl.constexpr, BQ: gl.constexpr,
                       BQS: gl.constexpr, BK: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    """The producer: for each work item with candidate keys, the consumers' q tiles (two slots, so that the next
    item's q arrives while the consumers finish the current one), then its K tiles into the ring with their
    keys' sk_j and qmk_j (zero past N), each stage once every consumer released it (a fresh barrier's previous
    phase reads complete)."""
    ITEM_ROWS: gl.constexpr = CONSUMERS * ROWS
    BH = n_work // NQT
    g = 0
    it = 0
    for w in range(gl.program_id(0), n_work, gl.num_programs(0)):
        bh, qt, n_tiles = _work_item(w, BH, NQT, NR, WINDOW, BQ, BQS, BK, ITEM_ROWS, BLOCK_N)
        if n_tiles > 0:
            bkv = (bh // HQ) * (HQ // GROUP) + (bh % HQ) // GROUP
            slot = it % 2
            mbarrier.wait(q_empty.index(slot), ((it // 2) & 1) ^ 1)
            mbarrier.expect(q_full.index(slot), CONSUMERS * desc_q.block_type.nbytes)
            for c in gl.static_range(CONSUMERS):
                _tma_load(desc_q, [bh, qt * ITEM_ROWS + c * ROWS, 0], q_full.index(slot), q_boxes.index(CONSUMERS * slot + c))
            for i in range(n_tiles):
                u = g + i
                mbarrier.wait(k_empty.index(u % STAGES), ((u // STAGES) & 1) ^ 1)
                bar = k_full.index(u % STAGES)
                mbarrier.expect(bar, desc_k.block_type.nbytes + desc_sk.block_type.nbytes + desc_qmk.block_type.nbytes)
                _tma_load(desc_k, [bkv, i * BLOCK_N, 0], bar, k_boxes.index(u % STAGES))
                _tma_load(desc_sk, [bkv, i * BLOCK_N], bar, sk_boxes.index(u % STAGES))
                _tma_load(desc_qmk, [bh, i * BLOCK_N], bar, qmk_boxes.index(u % STAGES))
            g += n_tiles
            it += 1


@gluon.jit
def _estimate_gluon_kernel(
    desc_q, desc_k, desc_sk, desc_qmk, sq_ptr, t_ptr, mask_ptr,
    N, HQ, GROUP, NQB, NKB, NR, WINDOW, n_work, NQT, ROW_STRIDE,
    HEAD_DIM: gl.constexpr, BQ: gl.constexpr, BQS: gl.constexpr, BK: gl.constexpr, ROWS: gl.constexpr,
    BLOCK_N: gl.constexpr, STAGES: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    num_warps: gl.constexpr, PROBE: gl.constexpr = 0,
):
    CONSUMERS: gl.constexpr = 4
    """Flags (int8 1) in mask [B * Hq, NQB, NKB] (zero before the launch) for every candidate (query block, key
    block) with some estimated s_hat_ij > t_i: four consumer warpgroups of ROWS estimated rows each and one
    producer warpgroup per program; a persistent grid over the n_work = B * Hq * NQT work items."""
    dtype: gl.constexpr = desc_k.dtype
    q_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([ROWS, HEAD_DIM], dtype)
    k_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)
    q_smem = gl.allocate_shared_memory(dtype, [2 * CONSUMERS, ROWS, HEAD_DIM], q_l)   # two slots of every q tile
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], k_l)
    q_boxes = _reinterpret(q_smem, dtype, [2 * CONSUMERS, 1, ROWS, HEAD_DIM], desc_q.layout)
    k_boxes = _reinterpret(k_smem, dtype, [STAGES, 1, BLOCK_N, HEAD_DIM], desc_k.layout)
    vec_l: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=1)
    sk_smem = gl.allocate_shared_memory(gl.float32, [STAGES, BLOCK_N], vec_l)
    qmk_smem = gl.allocate_shared_memory(gl.float32, [STAGES, BLOCK_N], vec_l)
    sk_boxes = _reinterpret(sk_smem, gl.float32, [STAGES, 1, BLOCK_N], desc_sk.layout)
    qmk_boxes = _reinterpret(qmk_smem, gl.float32, [STAGES, 1, BLOCK_N], desc_qmk.layout)
    k_full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    q_full = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(k_full.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=CONSUMERS)
    for i in gl.static_range(2):
        mbarrier.init(q_full.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=CONSUMERS)
    gl.warp_specialize([
        (_estimate_producer, (desc_q, desc_k, desc_sk, desc_qmk, q_boxes, k_boxes, sk_boxes, qmk_boxes, k_full, k_empty,
                              q_full, q_empty, N, HQ, GROUP, NR, WINDOW, n_work, NQT, CONSUMERS, ROWS, BQ, BQS, BK,
                              BLOCK_N, STAGES)),
        (_estimate_consumer, (q_smem, k_smem, sk_smem, qmk_smem, k_full, k_empty, q_full, q_empty, sq_ptr,
                              t_ptr, mask_ptr, N, HQ, NQB, NKB, NR, WINDOW, n_work, NQT, ROW_STRIDE, 0, CONSUMERS,
                              ROWS, BQ, BQS, BK, BLOCK_N, STAGES, num_warps, PROBE)),
        (_estimate_consumer, (q_smem, k_smem, sk_smem, qmk_smem, k_full, k_empty, q_full, q_empty, sq_ptr,
                              t_ptr, mask_ptr, N, HQ, NQB, NKB, NR, WINDOW, n_work, NQT, ROW_STRIDE, 1, CONSUMERS,
                              ROWS, BQ, BQS, BK, BLOCK_N, STAGES, num_warps, PROBE)),
        (_estimate_consumer, (q_smem, k_smem, sk_smem, qmk_smem, k_full, k_empty, q_full, q_empty, sq_ptr,
                              t_ptr, mask_ptr, N, HQ, NQB, NKB, NR, WINDOW, n_work, NQT, ROW_STRIDE, 2, CONSUMERS,
                              ROWS, BQ, BQS, BK, BLOCK_N, STAGES, num_warps, PROBE)),
        (_estimate_consumer, (q_smem, k_smem, sk_smem, qmk_smem, k_full, k_empty, q_full, q_empty, sq_ptr,
                              t_ptr, mask_ptr, N, HQ, NQB, NKB, NR, WINDOW, n_work, NQT, ROW_STRIDE, 3, CONSUMERS,
                              ROWS, BQ, BQS, BK, BLOCK_N, STAGES, num_warps, PROBE)),
    ], [num_warps, num_warps, num_warps, num_warps], [CONSUMER_REGS, CONSUMER_REGS, CONSUMER_REGS, CONSUMER_REGS])
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(k_full.index(i))
        mbarrier.invalidate(k_empty.index(i))
    for i in gl.static_range(2):
        mbarrier.invalidate(q_full.index(i))
        mbarrier.invalidate(q_empty.index(i))


# Configurations kept as data. rows: estimated query rows per consumer warpgroup (the MMA's N; the four
# consumers share each K tile); block_n: keys per K tile (the MMA's M, one warpgroup's 64); stages: K tiles in
# the ring; consumer_regs: registers per consumer thread (setmaxnreg; ptxas compiles every role within the 96
# registers a thread of a 20-warp program has). Measured on the H200 at 64K (2026-12-02): 21.5 ms against 23.0
# for two consumers of 128 rows (232 registers, removed) and 20.4 for the Triton default; two groups of two
# consumers taking turns on the tensor cores (FlashAttention-3's ping-pong, removed) 21.78 against 21.47
# (traces/h200_bench_select_gluon_turns.txt, 2026-12-03).
GLUON_SELECT_CONFIGS = {
    "gluon": dict(rows=64, block_n=64, stages=6, consumer_regs=112),
}
# Timing probes (wrong masks): the MMAs alone, the votes alone.
GLUON_PROBES = {"probe_dot_only": {**GLUON_SELECT_CONFIGS["gluon"], "probe": 1},
                "probe_vote_only": {**GLUON_SELECT_CONFIGS["gluon"], "probe": 2}}


def gluon_select_supported(q, config, return_margin: bool = False) -> bool:
    """Whether the Gluon estimate runs for these inputs: a Hopper GPU outside the interpreter, 64-row query and
    32-key blocks, head dim 64 or 128, at least 8 estimated rows per query block, no margins asked for."""
    from ._common import interpreting
    if interpreting() or not q.is_cuda or return_margin:
        return False
    if torch.cuda.get_device_capability(q.device) != (9, 0):
        return False
    rows_per_block = config.block_q // config.estimate_row_stride
    return (config.block_q == 64 and config.block_k == 32 and q.shape[-1] in (64, 128) and rows_per_block >= 8
            and config.estimate_row_stride & (config.estimate_row_stride - 1) == 0)


def _descriptor(x, block_rows):
    """TMA descriptor of an e4m3 tensor [heads, rows, D] (rows may be strided): boxes of block_rows rows,
    zero-filled past the rows."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    box = [1, block_rows, x.shape[-1]]
    layout = gl.NVMMASharedLayout.get_default_for(box, gl.float8e4nv)
    return TensorDescriptor(x, list(x.shape), list(x.stride()), box, layout)


def _vector_descriptor(x, block):
    """TMA descriptor of a float32 tensor [B, H, N] seen as [B * H, N]: boxes of one head's block values,
    zero-filled past N. TMA needs 16-byte aligned rows: for N not a multiple of 4, a copy padded with zeros."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    rows = x.reshape(-1, x.shape[-1])
    if rows.shape[-1] % 4:
        rows = torch.nn.functional.pad(rows, (0, 4 - rows.shape[-1] % 4))
    layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2)
    return TensorDescriptor(rows, list(rows.shape), list(rows.stride()), [1, block], layout)


def select_gluon(q, k, tau, config, quant, tile: str | None = None, return_kept: bool = False,
                 programs: int | None = None):
    """The selection pass with the Gluon estimate: ``select_kernel.select_triton``'s mask (and kept lists) from
    three launches: row thresholds (Triton, PHASE=1), the estimate's flags (this module's kernel), the row pass
    (Triton, PHASE=2). Returns (mask, None[, KeptBlocks]) like select_triton without margins.

    q: [B, Hq, N, D] bf16/fp16 on a Hopper GPU; k: [B, Hkv, N, D]; tau: float32 [Hq]; quant: ``quantize``'s
    output for (q, k, config). tile: a key of GLUON_SELECT_CONFIGS (default "gluon"); programs: the
    persistent grid's size (default: the SM count)."""
    from .select_kernel import SELECT_CONFIGS, _select_kernel
    tiles = {**GLUON_SELECT_CONFIGS, **GLUON_PROBES}
    if tile is not None and tile not in tiles:
        raise ValueError(f"select_gluon: tile must be None or one of {sorted(tiles)}, got {tile!r}")
    if not gluon_select_supported(q, config):
        raise ValueError("select_gluon needs a Hopper GPU, block_q 64, block_k 32, head dim 64 or 128 and at least "
                         f"8 estimated rows per query block, got device {q.device}, block_q={config.block_q}, "
                         f"block_k={config.block_k}, head dim {q.shape[-1]}, estimate_rows={config.estimate_rows}")
    cfg = tiles[tile or "gluon"]
    batch, hq, seq_len, head_dim = q.shape
    hkv = k.shape[1]
    stride = config.estimate_row_stride
    bqs = config.block_q // stride
    nqb, nkb = num_blocks(seq_len, config.block_q), num_blocks(seq_len, config.block_k)
    nr = nqb * bqs
    dev = q.device
    mask = torch.zeros((batch, hq, nqb, nkb), dtype=torch.int8, device=dev)
    counts = torch.empty((batch, hq, nqb), dtype=torch.int32, device=dev)
    indices = torch.empty((batch, hq, nqb, nkb), dtype=torch.int32, device=dev)
    t_rows = torch.empty((batch * hq, nr), dtype=torch.float32, device=dev)
    scale = config.scale_for(head_dim)
    tri = SELECT_CONFIGS["default"]
    qb_per_prog = max(1, tri["qb"] * 64 // config.block_q) * stride
    tau = tau.float().contiguous()
    common = (seq_len, hq, hq // hkv, nqb, nkb, config.local_window, config.sink_blocks, scale,
              scale * math.log2(math.e), q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2))
    consts = dict(HEAD_DIM=head_dim, BQ=config.block_q, BK=config.block_k, QB=qb_per_prog, ROW_STRIDE=stride,
                  BLOCK_N=tri["block_n"], STATS_N=tri["stats_n"], FILL_NB=min(64, 1 << (nkb - 1).bit_length()),
                  WRITE_MARGIN=False, INTERPRET=False, EPI=3, HEADS_FIRST=False, FP8=True, WARP_BLOCKS=False,
                  SPLIT=False, num_warps=tri["warps"], num_stages=tri["stages"])
    grid = (-(-nqb // qb_per_prog), batch * hq)
    pointers = (q, k, quant.k_mean, quant.q_hat, quant.k_hat, quant.q_scale, quant.k_scale, quant.qmk, tau,
                mask, counts, indices, mask, t_rows)
    _select_kernel[grid](*pointers, *common, PHASE=1, **consts)

    q_hat = quant.q_hat.view(torch.float8_e4m3fn) if quant.q_hat.dtype == torch.float8_e4m3fn else \
        quant.q_hat.to(torch.float8_e4m3fn)
    k_hat = quant.k_hat.to(torch.float8_e4m3fn)
    q_rows = q_hat.view(batch * hq, seq_len, head_dim)[:, ::stride]
    desc_q = _descriptor(q_rows, cfg["rows"])
    desc_k = _descriptor(k_hat.view(batch * hkv, seq_len, head_dim), cfg["block_n"])
    desc_sk, desc_qmk = _vector_descriptor(quant.k_scale, cfg["block_n"]), _vector_descriptor(quant.qmk, cfg["block_n"])
    item_rows = 4 * cfg["rows"]   # four consumer warpgroups
    nqt = -(-nr // item_rows)
    n_work = batch * hq * nqt
    n_prog = min(n_work, programs or torch.cuda.get_device_properties(dev).multi_processor_count)
    _estimate_gluon_kernel[(n_prog,)](
        desc_q, desc_k, desc_sk, desc_qmk, quant.q_scale, t_rows, mask,
        seq_len, hq, hq // hkv, nqb, nkb, nr, config.local_window, n_work, nqt, stride,
        HEAD_DIM=head_dim, BQ=config.block_q, BQS=bqs, BK=config.block_k, ROWS=cfg["rows"], BLOCK_N=cfg["block_n"],
        STAGES=cfg["stages"], CONSUMER_REGS=cfg["consumer_regs"], num_warps=4,
        PROBE=cfg.get("probe", 0))

    _select_kernel[grid](*pointers, *common, PHASE=2, **consts)
    out = (mask.view(torch.bool), None)
    return out + (KeptBlocks(counts, indices),) if return_kept else out
