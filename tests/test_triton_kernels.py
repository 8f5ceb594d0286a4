"""Triton kernels against the PyTorch reference: in the interpreter on small shapes (CI), and on the
GPU at 8K-32K (marked cuda). Masks are compared exactly; only blocks whose reference margin
max(s_hat - t) lies within rounding of 0 may differ, and the tests count them."""
import math

import pytest
import torch

import sale
from sale.blocks import causal_blocks, mask_to_steps, mask_to_union_steps, num_blocks
from sale.reference import quantize_int8_blocks
from sale.triton.attend_kernel import ATTEND_CONFIGS, attend_triton, kept_to_steps, kept_to_union
from sale.triton.quantize_kernel import quantize_int8_triton
from sale.triton.select_kernel import select_triton
from sale.workloads import StructuredParams, make_qkv

from helpers import low_precision_bound, rel_err

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON = sale.SaleConfig(backend="triton")
TIE = 1e-3  # |margin| below this is a tie within float32 rounding of the estimate and thresholds


def inputs(n, hq, hkv, d, seed, batch=1, dtype=torch.bfloat16):
    return make_qkv(num_q_heads=hq, num_kv_heads=hkv, seq_len=n, head_dim=d, dtype=dtype, device=DEVICE,
                    seed=seed, batch=batch, params=StructuredParams(slash_offsets=(100, 1000)))


def check_quantize(q, k, cfg):
    ref = sale.quantize(q, k, cfg.replace(backend="reference"))
    out = sale.quantize(q, k, cfg.replace(backend="triton"))
    for name in ("q_scale", "k_scale", "q_mean", "k_mean", "qmk"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=1e-5, atol=1e-5)
    for name in ("q_hat", "k_hat"):
        a, b = getattr(out, name), getattr(ref, name)
        flips = (a != b)
        # a value may round the other way only at a .5 tie reached through a 1-ulp different mean
        assert int(flips.sum()) <= max(2, a.numel() // 10**6), f"{name}: {int(flips.sum())} values differ"
        assert ((a.int() - b.int()).abs() <= 1).all()


def check_select(q, k, taus, cfg):
    quant = sale.quantize(q, k, cfg.replace(backend="triton"))
    _, margin_ref = sale.select_blocks(q, k, taus, cfg.replace(backend="reference"), return_margin=True)
    mask_ref = sale.select_blocks(q, k, taus, cfg.replace(backend="reference"))
    tau = torch.as_tensor(taus if not isinstance(taus, float) else [taus] * q.shape[1], dtype=torch.float32,
                          device=q.device)
    mask, margin, kept = select_triton(q, k, tau, cfg.replace(backend="triton"), quant, return_margin=True,
                                       return_kept=True)
    # without margins the kernel runs the vote (keys first by default, rows first in tiles rows and int8):
    # the very same flags
    for tile in ("default", "kf_split", "kf_in_order", "rows", "int8"):
        assert torch.equal(select_triton(q, k, tau, cfg.replace(backend="triton"), quant, tile=tile)[0], mask), tile
    differ = mask != mask_ref
    ties = differ & (margin_ref.abs() < TIE)
    where = [tuple(i.tolist()) + (float(margin_ref[tuple(i)]), bool(mask[tuple(i)]))
             for i in (differ & ~ties).nonzero()[:5]]
    assert int(differ.sum()) == int(ties.sum()), \
        f"{int((differ & ~ties).sum())} blocks differ beyond rounding: (b, h, qb, kb, ref margin, kept) {where}"
    assert int(ties.sum()) <= max(2, mask.numel() // 10**5), f"{int(ties.sum())} tied blocks differ"
    assert torch.equal(torch.isfinite(margin), torch.isfinite(margin_ref))
    fin = torch.isfinite(margin_ref)
    if fin.any():
        assert float((margin[fin] - margin_ref[fin]).abs().max()) < 1e-2 * max(1.0, float(margin_ref[fin].abs().max()))
    assert torch.equal(sale.kept_to_mask(kept), mask)
    assert ((kept.indices >= -1) & (kept.indices < mask.shape[-1])).all()
    return mask


CASES = [  # (N, Hq, Hkv, D, batch, granularity)
    (1, 2, 2, 64, 1, "per_token"),
    (63, 2, 1, 128, 2, "per_token"),
    (333, 4, 2, 64, 1, "per_token"),
    (301, 4, 4, 128, 1, "per_group"),
    (517, 6, 2, 64, 1, "per_group"),
    (77, 4, 1, 256, 1, "per_token"),     # Gemma 3's head dim
    (200, 2, 1, 256, 1, "per_group"),
]


@pytest.mark.parametrize("n, hq, hkv, d, batch, granularity", CASES)
def test_quantize_matches_reference(n, hq, hkv, d, batch, granularity):
    q, k, _ = inputs(n, hq, hkv, d, seed=n, batch=batch)
    check_quantize(q, k, sale.SaleConfig(granularity=granularity))


@pytest.mark.parametrize("n, hq, hkv, d, batch, granularity", CASES)
def test_select_matches_reference(n, hq, hkv, d, batch, granularity):
    q, k, _ = inputs(n, hq, hkv, d, seed=n + 1, batch=batch)
    taus = [0.0, 0.003, 0.03, 0.3, math.inf, 0.01][:hq] if hq <= 6 else 0.01
    mask = check_select(q, k, taus, sale.SaleConfig(granularity=granularity))
    if n > 300:
        assert not torch.equal(mask, causal_blocks(n, sale.SaleConfig(), mask.device).expand_as(mask))


@pytest.mark.parametrize("n, estimate_rows, local_window", [(333, 16, 128), (517, 4, 64), (200, 1, 0), (130, 32, 32)])
def test_select_with_sampled_rows_matches_reference(n, estimate_rows, local_window):
    """estimate_rows: the kernel estimates every (block_q / r)-th row, over several query blocks per
    program (also with windows shorter than a program's rows); the reference masks the other rows."""
    q, k, _ = inputs(n, 4, 2, 64, seed=n + 3)
    cfg = sale.SaleConfig(estimate_rows=estimate_rows, local_window=local_window)
    taus = [0.0, 0.003, 0.03, 0.3]
    mask = check_select(q, k, taus, cfg)
    exact = check_select(q, k, taus, cfg.replace(estimate_rows=None))
    assert not (mask & ~exact).any(), "sampled rows can only drop blocks of the exact mask"
    assert int(mask.sum()) < int(exact.sum()), "the test input should make row sampling drop some blocks"


def check_attend_on_random_masks(n, hq, hkv, d, tile, seed, batch=1, attend=None):
    """A tile against the float64 reference on random masks (density 0.3), on the always-computed blocks
    alone (rows empty apart from them) and on a hand-made mask with no diagonal; the output is poisoned
    first, so every row must be written. attend(q, k, v, mask): the computation pass to check, instead of
    attend_triton with `tile`."""
    q, k, v = inputs(n, hq, hkv, d, seed=seed, batch=batch)
    cfg = sale.SaleConfig()
    g = torch.Generator().manual_seed(n)
    drawn = (torch.rand(batch, hq, num_blocks(n, 64), num_blocks(n, 32), generator=g) < 0.3).to(DEVICE)
    always = sale.always_computed_blocks(n, cfg, DEVICE).expand(batch, hq, -1, -1)
    for mask in (drawn | always, always.contiguous(), drawn):
        ref64 = sale.block_sparse_attention(q.double(), k.double(), v.double(), mask, cfg)
        out = torch.full_like(q, math.nan)
        out.copy_(attend(q, k, v, mask) if attend else attend_triton(q, k, v, mask, TRITON, tile=tile))
        assert torch.isfinite(out).all()
        bound = low_precision_bound(q, k, v, sale.dense_attention(q.double(), k.double(), v.double()))
        assert rel_err(out, ref64) <= bound, (rel_err(out, ref64), bound)


@pytest.mark.parametrize("tile", ["default", "gathered"])
@pytest.mark.parametrize("n, hq, hkv, d", [(1, 2, 1, 64), (97, 4, 2, 64), (300, 2, 2, 128), (161, 4, 1, 256)])
def test_attend_matches_reference_on_random_masks(n, hq, hkv, d, tile):
    check_attend_on_random_masks(n, hq, hkv, d, tile, seed=n + 2)


@pytest.mark.parametrize("tile", ["gathered", "split_s2_lp"])
def test_attend_tiles_agree_with_the_default(tile):
    """Every Triton tile of the computation pass computes the same kept blocks (the split form's full pairs,
    lone blocks, one or two per step, and tail pairs, at 3 and 2 stages; the gathered form)."""
    q, k, v = inputs(999, 2, 1, 64, seed=5)   # long enough for rows with 0 to 9 lone blocks (odd and even)
    cfg = sale.SaleConfig()
    g = torch.Generator().manual_seed(5)
    mask = (torch.rand(1, 2, num_blocks(999, 64), num_blocks(999, 32), generator=g) < 0.4).to(DEVICE)
    mask |= sale.always_computed_blocks(999, cfg, DEVICE)
    ref64 = sale.block_sparse_attention(q.double(), k.double(), v.double(), mask, cfg)
    out = attend_triton(q, k, v, mask, TRITON, tile=tile)
    assert rel_err(out, ref64) <= low_precision_bound(q, k, v, sale.dense_attention(q.double(), k.double(), v.double()))


@pytest.mark.parametrize("n, share", [(1, 1.0), (97, 0.5), (1500, 0.3), (4099, 0.05)])
@pytest.mark.parametrize("block_q", [64, 128])
def test_kept_to_steps_matches_the_torch_converter(n, share, block_q):
    """The Triton converter (kept lists -> the split form's steps) equals blocks.mask_to_steps exactly,
    with odd numbers of key blocks and lists longer than one chunk of the kernel; every kept block is
    in exactly one step."""
    cfg = sale.SaleConfig(block_q=block_q)
    g = torch.Generator().manual_seed(n)
    causal = causal_blocks(n, cfg, DEVICE)
    mask = (torch.rand(2, 3, *causal.shape, generator=g) < share).to(DEVICE) & causal
    steps, ref = kept_to_steps(sale.mask_to_kept(mask), cfg), mask_to_steps(mask, cfg)
    assert torch.equal(steps.counts, ref.counts)
    assert torch.equal(torch.where(ref.steps >= 0, steps.steps, -1), ref.steps)
    full, lone, tail = (c.sum() for c in ref.counts.unbind(-1))
    from_end = torch.arange(ref.steps.shape[-1], device=DEVICE).flip(0)  # position counted from the end
    in_lone = from_end < ref.counts[..., 1:2]
    in_tail = (from_end >= ref.counts[..., 1:2]) & (from_end < ref.counts[..., 1:2] + ref.counts[..., 2:3])
    lone_flags, tail_flags = (torch.where(w, ref.steps & 3, 0) for w in (in_lone, in_tail))
    assert ((lone_flags == 1) | (lone_flags == 2))[in_lone].all(), "a lone entry holds exactly one kept block"
    assert int(2 * full + lone + (tail_flags & 1).sum() + (tail_flags >> 1).sum()) == int(mask.sum())
    assert int(in_tail.sum()) == int(tail) and int(in_lone.sum()) == int(lone)
    if share == 1.0 and n > 64:
        assert int(full) > 0


@pytest.mark.parametrize("n, share", [(1, 1.0), (97, 0.5), (300, 0.3), (2100, 1.0), (4099, 0.05), (4099, 0.5)])
@pytest.mark.parametrize("slots, split", [(2, False), (4, False), (4, True)])
def test_kept_to_union_matches_the_torch_converter(n, share, slots, split):
    """The Triton converter (two query blocks' kept lists -> their union ring) equals blocks.mask_to_union_steps
    exactly, odd numbers of query and key blocks and lists longer than one chunk included. On the reference:
    every causal kept block of either query block is in the ring once with the flags of the blocks that keep
    it; in the order of blocks.union_ring_kinds, "both" steps hold blocks both keep before the pair's first
    row, "only" steps blocks of their owner alone before its first row, and with split the halved "only"
    steps block 2j's own blocks in their first half, block 2j + 1's in the second."""
    cfg = sale.SaleConfig()
    g = torch.Generator().manual_seed(n + slots)
    nqb, nkb = num_blocks(n, 64), num_blocks(n, 32)
    mask = (torch.rand(2, 3, nqb, nkb, generator=g) < share).to(DEVICE)   # blocks past the diagonal dropped
    union = kept_to_union(sale.mask_to_kept(mask), cfg, slots, split)
    ref = mask_to_union_steps(mask, cfg, slots, split)
    assert torch.equal(union.counts, ref.counts)
    assert torch.equal(torch.where(ref.codes >= 0, union.codes, -1), ref.codes)
    mask = mask & causal_blocks(n, cfg, DEVICE)
    for b, h, j in [(0, 0, 0), (1, 2, (nqb - 1) // 2), (0, 1, nqb // 4)]:
        n_ring, s_both, s0, s1 = ref.counts[b, h, j].tolist()
        steps = ref.codes[b, h, j, :n_ring * slots].view(n_ring, slots)
        kept = {(int(c) >> 2, int(c) & 3) for c in steps.flatten() if int(c) & 3}
        want = {(kb, int(mask[b, h, 2 * j, kb]) + 2 * int(mask[b, h, 2 * j + 1, kb] if 2 * j + 1 < nqb else 0))
                for kb in range(nkb)}
        assert kept == {w for w in want if w[1]}
        assert len(kept) == int((steps & 3 > 0).sum())        # each block once
        first = (2 * j * cfg.block_q, (2 * j + 1) * cfg.block_q)
        excess, half = abs(s0 - s1), slots // 2
        for u, kind in enumerate(sale.blocks.union_ring_kinds(n_ring, s_both, s0, s1, split)):
            flags, ends = steps[u] & 3, ((steps[u] >> 2) + 1) * cfg.block_k
            if kind:   # an "only" step: every block kept by its owner alone, before the owner's first row
                assert (flags == kind).all() and (ends <= first[kind - 1]).all(), (u, kind)
            elif excess <= u < excess + s_both:   # a "both" step
                assert (flags == 3).all() and (ends <= first[0]).all(), u
            elif split and u < excess + s_both + 2 * min(s0, s1):   # a halved "only" step
                assert (flags[:half] == 1).all() and (ends[:half] <= first[0]).all(), u
                assert (flags[half:] == 2).all() and (ends[half:] <= first[1]).all(), u
    if share == 1.0 and n > 2 * cfg.block_q:
        assert int(ref.counts[..., 1].sum()) > 0


def _ring_schedule(n_ring, s_both, s0, s1, lead):
    """A CPU mirror of attend_gluon._ring_step and _full_barrier: (ring step, barrier kind) of each of a
    consumer's steps."""
    excess = max(s0, s1) - min(s0, s1)
    own_excess = excess if (s0 > s1 if lead else s1 > s0) else 0
    n_unmasked = s_both + (s0 if lead else s1)
    n_steps = n_unmasked + n_ring - s_both - s0 - s1
    out = []
    for i in range(n_steps):
        if i < own_excess:
            t = i
        elif i < own_excess + s_both:
            t = excess + i - own_excess
        elif i < n_unmasked:
            t = excess + s_both + 2 * (i - own_excess - s_both) + (0 if lead else 1)
        else:
            t = s0 + s1 + s_both + i - n_unmasked
        own = i < n_unmasked and (i < own_excess or i >= own_excess + s_both)
        out.append((t, (1 if lead else 2) if own else 0))
    return out


def _split_schedule(n_ring, s_both, s0, s1, lead):
    """A CPU mirror of attend_gluon._attend_rows_split and _region_barrier: (ring step, barrier kind, whether
    the step ends its region) of each of a consumer's steps."""
    excess = abs(s0 - s1)
    own_end = excess if (s0 > s1 if lead else s1 > s0) else 0
    halved = excess + s_both
    mixed = halved + 2 * min(s0, s1)
    return [(t, (1 if lead else 2) if t < own_end else 0, t == t1 - 1)
            for t0, t1 in ((excess - own_end, halved), (halved, mixed), (mixed, n_ring)) for t in range(t0, t1)]


def _ring_runs_to_the_end(kinds, stages, order, drains=((), ())):
    """The union ring's protocol as the Gluon kernel runs it: the producer fills stage u % stages once both
    consumers released step u - stages (it releases an "only" step for the consumer that skips it), each
    consumer waits for its steps in order on the full barrier of the step's kind and releases its previous
    step when its next one is ready (and its last at the end), or at once after the steps in drains[consumer]
    (the ends of the split consumers' regions). `order` picks who moves; False on a deadlock.
    Also asserts that no consumer waits on a barrier more than one phase behind (mbarrier parity)."""
    full, released, loaded = {}, [0] * stages, 0
    scheds = [[(t, k) for t, k in enumerate(kinds) if k in (0, c + 1)] for c in (0, 1)]
    pos, held, waited = [0, 0], [None, None], [{}, {}]
    while True:
        moved = False
        for who in order():
            if who == 2 and loaded < len(kinds) and released[loaded % stages] // 2 >= loaded // stages:
                key = (kinds[loaded], loaded % stages)
                full[key] = full.get(key, 0) + 1
                released[loaded % stages] += kinds[loaded] != 0
                loaded, moved = loaded + 1, True
            elif who < 2 and pos[who] <= len(scheds[who]):
                if pos[who] == len(scheds[who]):
                    if held[who] is not None:
                        released[held[who] % stages] += 1
                    pos[who], moved = pos[who] + 1, True
                    continue
                t, kind = scheds[who][pos[who]]
                key = (kind, t % stages)
                rounds = waited[who].get(key, 0)
                assert full.get(key, 0) <= rounds + 1, "a barrier ran two phases ahead of its waiter"
                if full.get(key, 0) == rounds + 1:
                    waited[who][key] = rounds + 1
                    if held[who] is not None:
                        released[held[who] % stages] += 1
                    held[who], pos[who], moved = t, pos[who] + 1, True
                    if t in drains[who]:
                        released[t % stages], held[who] = released[t % stages] + 1, None
        if not moved:
            return loaded == len(kinds) and pos == [len(scheds[0]) + 1, len(scheds[1]) + 1]


@pytest.mark.parametrize("stages", [3, 4, 5])
def test_union_ring_schedule_matches_the_ring_and_runs_to_the_end(stages):
    """The Gluon skip tiles' schedule (mirrored on the CPU) on every small ring: each consumer computes
    exactly the steps blocks.union_ring_kinds gives it, in order; and the protocol of producer and consumers
    ends for every shape of ring and under random interleavings (a run of one consumer's steps anywhere but
    at the start would deadlock with 3 stages: the reason the longer group's excess comes first)."""
    import itertools
    import random
    rng = random.Random(stages)
    for s_both, s0, s1, mixed in itertools.product(range(4), range(6), range(6), range(3)):
        n_ring = s_both + s0 + s1 + mixed
        kinds = sale.blocks.union_ring_kinds(n_ring, s_both, s0, s1)
        for lead in (True, False):
            sched = _ring_schedule(n_ring, s_both, s0, s1, lead)
            assert sched == [(t, k) for t, k in enumerate(kinds) if k in (0, 1 if lead else 2)]
        assert _ring_runs_to_the_end(kinds, stages, lambda: [2, 0, 1])
        assert _ring_runs_to_the_end(kinds, stages, lambda: rng.sample([0, 1, 2], 3))


@pytest.mark.parametrize("stages", [3, 4])
def test_split_ring_schedule_matches_the_ring_and_runs_to_the_end(stages):
    """The same for the split union ring (tile gluon_split): each consumer computes the steps
    blocks.union_ring_kinds(split=True) gives it, in order, in three regions (its excess and the "both" steps,
    the halved "only" steps, the mixed steps) after each of which it releases its stage; the protocol ends for
    every small ring under fixed and random interleavings."""
    import itertools
    import random
    rng = random.Random(stages)
    for s_both, s0, s1, mixed in itertools.product(range(4), range(6), range(6), range(3)):
        n_ring = s_both + s0 + s1 + mixed
        kinds = sale.blocks.union_ring_kinds(n_ring, s_both, s0, s1, split=True)
        drains = []
        for lead in (True, False):
            sched = _split_schedule(n_ring, s_both, s0, s1, lead)
            assert [(t, k) for t, k, _ in sched] == [(t, k) for t, k in enumerate(kinds) if k in (0, 1 if lead else 2)]
            drains.append({t for t, _, last in sched if last})
        assert _ring_runs_to_the_end(kinds, stages, lambda: [2, 0, 1], drains)
        assert _ring_runs_to_the_end(kinds, stages, lambda: rng.sample([0, 1, 2], 3), drains)
    # a persistent program's ring: several pairs' rings one after the other, the stages and phases running on
    for _ in range(300):
        kinds, drains = [], [set(), set()]
        for _ in range(rng.randint(2, 4)):
            s_both, s0, s1, mixed = rng.randint(0, 3), rng.randint(0, 5), rng.randint(0, 5), rng.randint(0, 2)
            n_ring, base = s_both + s0 + s1 + mixed, len(kinds)
            kinds += sale.blocks.union_ring_kinds(n_ring, s_both, s0, s1, split=True)
            for who, lead in enumerate((True, False)):
                drains[who] |= {base + t for t, _, last in _split_schedule(n_ring, s_both, s0, s1, lead) if last}
        assert _ring_runs_to_the_end(kinds, stages, lambda: rng.sample([0, 1, 2], 3), drains)


@pytest.mark.parametrize("tile", ["default", "gathered"])
def test_attend_with_128_row_blocks(tile):
    """128-row blocks (an odd length): the split form (the default; two tail pairs, 8 warps) and the gathered
    form."""
    q, k, v = inputs(333, 4, 2, 128, seed=9)
    cfg = sale.SaleConfig(block_q=128)
    g = torch.Generator().manual_seed(9)
    mask = (torch.rand(1, 4, num_blocks(333, 128), num_blocks(333, 32), generator=g) < 0.4).to(DEVICE)
    mask |= sale.always_computed_blocks(333, cfg, DEVICE)
    ref64 = sale.block_sparse_attention(q.double(), k.double(), v.double(), mask, cfg)
    out = torch.full_like(q, math.nan)
    out.copy_(attend_triton(q, k, v, mask, cfg.replace(backend="triton"), tile=tile))
    assert rel_err(out, ref64) <= low_precision_bound(q, k, v, sale.dense_attention(q.double(), k.double(), v.double()))


def test_attend_default_falls_back_without_tma_alignment():
    """K and V at an address TMA cannot copy from: the default runs the gathered form, the split form
    named explicitly says which tensor and why."""
    q, k, v = inputs(150, 2, 1, 64, seed=10)
    cfg = sale.SaleConfig()
    mask = sale.always_computed_blocks(150, cfg, DEVICE).expand(1, 2, -1, -1).contiguous()
    storage = torch.empty(k.numel() + 1, dtype=k.dtype, device=DEVICE)
    k_odd = storage[1:].view(k.shape)   # 2 bytes past a 16-byte boundary
    k_odd.copy_(k)
    out = attend_triton(q, k_odd, v, mask, TRITON)
    torch.testing.assert_close(out, attend_triton(q, k, v, mask, TRITON, tile="gathered"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="copies k by TMA"):
        attend_triton(q, k_odd, v, mask, TRITON, tile="default")


@pytest.mark.parametrize("tile", ["qb1_n64_s32", "kf_n64"])
def test_select_tiles_give_the_default_mask(tile):
    q, k, _ = inputs(333, 4, 2, 64, seed=6)
    quant = sale.quantize(q, k, TRITON)
    tau = torch.tensor([0.0, 0.003, 0.03, 0.3], device=DEVICE)
    assert torch.equal(select_triton(q, k, tau, TRITON, quant, tile=tile)[0], select_triton(q, k, tau, TRITON, quant)[0])


def test_block_q_128_select_and_attend():
    """128-row mask blocks (an option of SaleConfig): the selection keeps its rows per program, the
    computation pass runs 128-row tiles on two warpgroups."""
    q, k, v = inputs(333, 4, 2, 64, seed=8)
    cfg = sale.SaleConfig(block_q=128)
    mask = check_select(q, k, [0.0, 0.003, 0.03, 0.3], cfg)
    assert mask.shape[-2] == 3
    ref64 = sale.block_sparse_attention(q.double(), k.double(), v.double(), mask, cfg)
    out = attend_triton(q, k, v, mask, cfg.replace(backend="triton"))
    assert rel_err(out, ref64) <= low_precision_bound(q, k, v, sale.dense_attention(q.double(), k.double(), v.double()))


@pytest.mark.parametrize("n, block_rows, smooth", [(1, 1, False), (97, 1, False), (300, 64, True), (517, 128, True),
                                                  (64, 64, True)])
def test_quantize_int8_matches_reference(n, block_rows, smooth):
    """The computation pass's 8-bit quantization (per token, per block of rows, smoothed or not) equals the
    reference bit for bit: both divide correctly rounded and round the rounded product half to even."""
    q, k, _ = inputs(n, 4, 2, 128 if n % 2 else 64, seed=n + 30)
    x = k if smooth else q
    mean = x.mean(2, dtype=torch.float32) if smooth else None
    x_hat, scale = quantize_int8_triton(x, block_rows, mean)
    ref_hat, ref_scale = quantize_int8_blocks(x, block_rows, mean)
    assert torch.equal(scale, ref_scale)
    assert torch.equal(x_hat, ref_hat), f"{int((x_hat != ref_hat).sum())} values differ"
    assert int(x_hat.abs().max()) == 127 if n > 1 or not smooth else True


INT8 = TRITON.replace(int8_qk=True)


@pytest.mark.parametrize("tile", ["default", "split_s2_lp", "gathered"])
@pytest.mark.parametrize("n, hq, hkv, d", [(1, 2, 1, 64), (97, 4, 2, 64), (300, 2, 2, 128), (700, 2, 1, 64)])
def test_attend_int8_qk_matches_reference(n, hq, hkv, d, tile):
    """SaleConfig(int8_qk=True): every form of the computation pass (split: pair, lone and tail steps, at 3 and
    2 stages; gathered) against the reference of the same
    math in float64, within the usual bound; and the int8 form against exact attention within 3x of what a
    plain bf16 PyTorch attention gives (8-bit q . k costs about as much accuracy as 16-bit scores do)."""
    q, k, v = inputs(n, hq, hkv, d, seed=n + 40)
    g = torch.Generator().manual_seed(n + 1)
    mask = (torch.rand(1, hq, num_blocks(n, 64), num_blocks(n, 32), generator=g) < 0.4).to(DEVICE)
    mask |= sale.always_computed_blocks(n, sale.SaleConfig(), DEVICE)
    out = torch.full_like(q, math.nan)
    out.copy_(attend_triton(q, k, v, mask, INT8, tile=tile))
    assert torch.isfinite(out).all()
    dense64 = sale.dense_attention(q.double(), k.double(), v.double())
    ref8 = sale.block_sparse_attention(q.double(), k.double(), v.double(), mask, sale.SaleConfig(int8_qk=True))
    assert rel_err(out, ref8) <= low_precision_bound(q, k, v, dense64), (rel_err(out, ref8),)
    exact = sale.block_sparse_attention(q.double(), k.double(), v.double(), mask, sale.SaleConfig())
    assert rel_err(out, exact) <= low_precision_bound(q, k, v, dense64, factor=3.0), (rel_err(out, exact),)


def test_attend_int8_qk_with_128_row_blocks():
    q, k, v = inputs(333, 4, 2, 128, seed=19)
    cfg = sale.SaleConfig(block_q=128, int8_qk=True)
    mask = sale.select_blocks(q, k, 0.01, cfg.replace(backend="triton"))
    ref8 = sale.block_sparse_attention(q.double(), k.double(), v.double(), mask, cfg)
    bound = low_precision_bound(q, k, v, sale.dense_attention(q.double(), k.double(), v.double()))
    for tile in ("gathered", "default"):
        out = attend_triton(q, k, v, mask, cfg.replace(backend="triton"), tile=tile)
        assert rel_err(out, ref8) <= bound, (tile, rel_err(out, ref8), bound)


def test_sale_attention_int8_qk_end_to_end():
    """sale_attention with int8_qk: the triton pipeline (k_mean passed on from the 4-bit quantization) equals
    the reference backend's int8 math on the same mask, and differs from the exact form."""
    q, k, v = inputs(260, 4, 2, 64, seed=21)
    taus = [0.0, 0.01, 0.05, 0.2]
    out, stats = sale.sale_attention(q, k, v, taus, INT8, return_stats=True)
    ref8 = sale.block_sparse_attention(q.double(), k.double(), v.double(), stats.mask, sale.SaleConfig(int8_qk=True))
    assert rel_err(out, ref8) <= low_precision_bound(q, k, v, sale.dense_attention(q.double(), k.double(), v.double()))
    assert not torch.equal(out, sale.sale_attention(q, k, v, taus, TRITON))


def test_sale_attention_triton_end_to_end():
    q, k, v = inputs(260, 4, 2, 64, seed=7)
    out, stats = sale.sale_attention(q, k, v, [0.0, 0.01, 0.05, 0.2], TRITON, return_stats=True)
    ref_out, ref_stats = sale.sale_attention(q.float(), k.float(), v.float(), [0.0, 0.01, 0.05, 0.2],
                                             sale.SaleConfig(), return_stats=True)
    assert (stats.mask != ref_stats.mask).sum() <= 2
    ref64 = sale.block_sparse_attention(q.double(), k.double(), v.double(), stats.mask, sale.SaleConfig())
    assert rel_err(out, ref64) <= low_precision_bound(q, k, v, sale.dense_attention(q.double(), k.double(), v.double()))



def test_sale_attention_takes_the_computation_pass_tile_from_the_config():
    """SaleConfig.attend_tile picks the computation pass's form for sale_attention (here the gathered form
    against the default: the same blocks, outputs within the bound); an unknown name is refused naming the
    field."""
    q, k, v = inputs(260, 4, 2, 64, seed=8)
    taus = [0.0, 0.01, 0.05, 0.2]
    out, stats = sale.sale_attention(q, k, v, taus, TRITON.replace(attend_tile="gathered"), return_stats=True)
    ref64 = sale.block_sparse_attention(q.double(), k.double(), v.double(), stats.mask, sale.SaleConfig())
    assert rel_err(out, ref64) <= low_precision_bound(q, k, v, sale.dense_attention(q.double(), k.double(), v.double()))
    with pytest.raises(ValueError, match="SaleConfig.attend_tile must be None or one of"):
        sale.sale_attention(q, k, v, taus, TRITON.replace(attend_tile="fastest"))

# ---- on the GPU: 8K-32K, poisoned outputs -------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("n, hq, hkv, d", [(8192, 8, 2, 128), (16383, 4, 1, 64), (32768, 4, 1, 128),
                                           (16383, 4, 1, 256)])
def test_select_on_gpu_matches_reference(n, hq, hkv, d):
    q, k, _ = inputs(n, hq, hkv, d, seed=11)
    check_quantize(q, k, sale.SaleConfig())
    check_select(q, k, 0.01, sale.SaleConfig())


@pytest.mark.cuda
@pytest.mark.parametrize("estimate_rows", [16, 8])
def test_select_on_gpu_with_sampled_rows(estimate_rows):
    q, k, _ = inputs(16384, 8, 2, 128, seed=14)
    check_select(q, k, 0.01, sale.SaleConfig(estimate_rows=estimate_rows))


@pytest.mark.cuda
def test_select_on_gpu_writes_every_element():
    q, k, _ = inputs(8191, 4, 2, 128, seed=12)
    quant = sale.quantize(q, k, TRITON)
    tau = torch.full((4,), 0.01, device=DEVICE)
    torch.cuda.empty_cache()
    # Poison the allocator's free memory so that unwritten elements would read as garbage.
    junk = torch.full((4, 8192 // 64 + 1, 8192 // 32 + 1, 3), 0x5A5A5A5A, dtype=torch.int32, device=DEVICE)
    del junk
    mask, margin, kept = select_triton(q, k, tau, TRITON, quant, return_margin=True, return_kept=True)
    assert ((mask.view(torch.int8) == 0) | (mask.view(torch.int8) == 1)).all()
    assert ((kept.indices >= -1) & (kept.indices < mask.shape[-1])).all()
    assert torch.equal(sale.kept_to_mask(kept), mask)
    assert not torch.isnan(margin).any()
    for tile in ("default", "kf_split", "rows", "int8"):  # the votes (no margins) set flags in rows they clear
        junk = torch.full((4, 8192 // 64 + 1, 8192 // 32 + 1, 3), 0x5A5A5A5A, dtype=torch.int32, device=DEVICE)
        del junk
        vote_mask, _, vote_kept = select_triton(q, k, tau, TRITON, quant, return_kept=True, tile=tile)
        assert ((vote_mask.view(torch.int8) == 0) | (vote_mask.view(torch.int8) == 1)).all(), tile
        assert torch.equal(vote_mask, mask), tile
        assert torch.equal(sale.kept_to_mask(vote_kept), mask), tile


def plain_rows_error(q, k, v, mask, rows):
    """Relative error of a plain bf16 PyTorch block-sparse attention on query rows `rows` against the
    float64 reference: the bound the kernel is held to (on a slab of rows, to stay small at 32K)."""
    cfg = sale.SaleConfig()
    ref = sale.reference.attention_reference(q.double(), k.double(), v.double(), mask, cfg)[:, :, rows]
    g = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q[:, :, rows] @ kk.transpose(-1, -2)) * cfg.scale_for(q.shape[3])
    keep = sale.reference._token_block_mask(mask, rows, q.shape[2], cfg)
    plain = torch.softmax(s.masked_fill(~keep, -math.inf), dim=-1) @ vv
    return rel_err(plain, ref), ref


@pytest.mark.cuda
@pytest.mark.parametrize("n, hq, hkv, d, batch", [(1, 2, 1, 64, 1), (97, 4, 2, 64, 2), (300, 2, 2, 128, 1),
                                                  (999, 2, 1, 64, 1), (4099, 8, 2, 128, 2), (3000, 6, 2, 128, 1)])
@pytest.mark.parametrize("tile", ["gluon_split_p"])
def test_attend_gluon_matches_reference_on_random_masks(n, hq, hkv, d, batch, tile):
    """The Gluon computation pass (Hopper only) on random masks: rows with 0 to many lone blocks, odd and even,
    full pairs and tail pairs; empty rows apart from the always-computed blocks; a mask with no diagonal
    (rows with no key at all are written as zeros); B > 1 and GQA; an odd number of query blocks (the second
    consumer then has no rows in the last pair); 144 pairs at n = 3000 (on an H100's 132 SMs
    some programs of the persistent tile take a second pair from the counter)."""
    check_attend_on_random_masks(n, hq, hkv, d, tile, seed=n + 7, batch=batch)


@pytest.mark.cuda
@pytest.mark.parametrize("programs", [1, 5])
def test_attend_gluon_persistent_grid_of_few_programs(programs):
    """The persistent split kernel on a grid of 1 or 5 programs: each program's ring, its barriers' phases and
    the tile hand-over run on over dozens of pairs of every kind (B > 1, GQA, an odd number of query blocks;
    the masks of ``check_attend_on_random_masks``, empty rows and rows with no key included)."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernels need sm_90")
    from sale.triton.attend_gluon import attend_union_gluon

    def attend(q, k, v, mask):
        kept = sale.mask_to_kept(mask & causal_blocks(q.shape[2], TRITON, DEVICE))
        return attend_union_gluon(q, k, v, kept_to_union(kept, TRITON, 4, True), TRITON,
                                  persistent=True, programs=programs)
    check_attend_on_random_masks(2999, 4, 2, 128, None, seed=programs, batch=2, attend=attend)


@pytest.mark.cuda
def test_attend_gluon_names_a_tensor_tma_cannot_copy():
    """V at an address TMA cannot copy from, with a Gluon tile named explicitly: the error says which tensor."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the Gluon kernels need sm_90")
    q, k, v = inputs(150, 2, 1, 64, seed=10)
    mask = sale.always_computed_blocks(150, sale.SaleConfig(), DEVICE).expand(1, 2, -1, -1).contiguous()
    v_odd = torch.empty(v.numel() + 1, dtype=v.dtype, device=DEVICE)[1:].view(v.shape)
    v_odd.copy_(v)
    with pytest.raises(ValueError, match="copies v by TMA"):
        attend_triton(q, k, v_odd, mask, TRITON, tile="gluon_split_p")


@pytest.mark.cuda
@pytest.mark.parametrize("n, hq, hkv, d", [(8192, 8, 2, 128), (16381, 4, 1, 64), (32768, 4, 2, 128),
                                           (8191, 4, 1, 256), (32768, 8, 2, 256)])
def test_attend_on_gpu(n, hq, hkv, d):
    q, k, v = inputs(n, hq, hkv, d, seed=13)
    rows = slice(n - 2048, n)
    for mask in (sale.select_blocks(q, k, 0.01, TRITON), torch.ones(1, hq, num_blocks(n, 64), num_blocks(n, 32),
                                                                       dtype=torch.bool, device=DEVICE)):
        out = torch.full_like(q, math.nan)
        out.copy_(attend_triton(q, k, v, mask, TRITON))
        assert torch.isfinite(out).all()  # every row written
        bound, ref = plain_rows_error(q, k, v, mask, rows)
        assert rel_err(out[:, :, rows], ref) <= 2 * bound + 1e-6
    # 100% density against SDPA (cuDNN where it runs, else any backend)
    sdpa = sale.sdpa_attention(q, k, v, "cudnn" if d == 128 else "flash")
    assert rel_err(out, sdpa) < 1e-2


@pytest.mark.cuda
@pytest.mark.parametrize("n, hq, hkv, d", [(8192, 8, 2, 128), (16381, 4, 1, 64), (32768, 4, 2, 128),
                                           (16381, 4, 1, 256)])
def test_attend_int8_qk_on_gpu(n, hq, hkv, d):
    """int8 q . k at 8K-32K on a SALE mask: bit-exact quantization, the output against the float64 reference
    of the same math on the last 2048 rows, the split and gathered forms against each other."""
    q, k, v = inputs(n, hq, hkv, d, seed=17)
    k_mean = k.mean(2, dtype=torch.float32)
    for x, rows, mean in ((q, 1, None), (k, 64, k_mean)):
        x_hat, scale = quantize_int8_triton(x, rows, mean)
        ref_hat, ref_scale = quantize_int8_blocks(x, rows, mean)
        assert torch.equal(scale, ref_scale) and int((x_hat != ref_hat).sum()) == 0
    mask = sale.select_blocks(q, k, 0.01, TRITON)
    rows = slice(n - 2048, n)
    out = torch.full_like(q, math.nan)
    out.copy_(attend_triton(q, k, v, mask, INT8))
    assert torch.isfinite(out).all()
    bound, _ = plain_rows_error(q, k, v, mask, rows)
    ref = sale.reference.attention_reference(q.double(), k.double(), v.double(), mask, INT8.replace(
        backend="reference"))[:, :, rows]   # the same int8 math in float64
    assert rel_err(out[:, :, rows], ref) <= 2 * bound + 1e-6
    gathered = attend_triton(q, k, v, mask, INT8, tile="gathered")
    assert rel_err(gathered, out) < 1e-2


@pytest.mark.cuda
@pytest.mark.parametrize("tile", [t for t in ATTEND_CONFIGS if t != "default" and not t.startswith("bq128")])
def test_attend_tiles_on_gpu(tile):
    """Every tile configuration of the computation pass on a SALE mask at 8K (odd length, GQA 4)."""
    n, hq, hkv, d = 8191, 8, 2, 128
    q, k, v = inputs(n, hq, hkv, d, seed=16)
    rows = slice(n - 2048, n)
    mask = sale.select_blocks(q, k, 0.01, TRITON)
    out = torch.full_like(q, math.nan)
    out.copy_(attend_triton(q, k, v, mask, TRITON, tile=tile))
    assert torch.isfinite(out).all()
    bound, ref = plain_rows_error(q, k, v, mask, rows)
    assert rel_err(out[:, :, rows], ref) <= 2 * bound + 1e-6
