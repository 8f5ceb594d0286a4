"""The reference stack against SALE's definitions (docs/algorithm.md), on fresh random inputs."""
import math

import pytest
import torch

import sale
from sale.blocks import always_computed_blocks, candidate_blocks, causal_blocks, num_blocks
from sale.reference import estimate_scores, quantize_4bit, row_statistics
from sale.workloads import StructuredParams, make_qkv

from helpers import low_precision_bound, rel_err

SEEDS = [0, 1, 2]
LENGTHS = [1, 37, 64, 200, 333]


def structured(seed, n, hq=4, hkv=2, d=64, dtype=torch.float32):
    return make_qkv("structured", batch=2, num_q_heads=hq, num_kv_heads=hkv, seq_len=n, head_dim=d,
                    dtype=dtype, seed=seed, params=StructuredParams(slash_offsets=(40, 150)))


def small_config(**kw):
    # Small blocks so that short sequences have many candidate blocks.
    return sale.SaleConfig(block_q=16, block_k=8, local_window=16, **kw)


def test_block_geometry_by_hand():
    cfg = sale.SaleConfig()  # 64 x 32, window 128, one sink block
    causal = causal_blocks(300, cfg)
    always = always_computed_blocks(300, cfg)
    assert causal.shape == (5, 10)
    # query block 4 holds rows 256..299: key blocks 0..9 are causal (key 288 <= row 299)
    assert causal[4].tolist() == [True] * 10
    # its first row is 256: local blocks have last key >= 128, i.e. blocks 4.., plus the sink 0
    assert always[4].tolist() == [True, False, False, False] + [True] * 6
    # query block 0 (rows 0..63) sees key blocks 0 and 1 only, both always computed
    assert always[0].tolist() == [True, True] + [False] * 8
    assert not (candidate_blocks(300, cfg) & ~causal).any()


def rel_score_mask(q, k, tau, cfg):
    """The Relative Attention Score computed directly with exp and division, then max per block."""
    quant = sale.quantize(q, k, cfg)
    n = q.shape[2]
    rows = slice(0, n)
    m, l = row_statistics(q.double(), k.double(), quant.k_mean.double(), cfg, rows)
    s_hat = estimate_scores(quant, rows, k.shape[1]).double()
    scale = cfg.scale_for(q.shape[3])
    ras = torch.exp(scale * (s_hat - m[..., None])) / l[..., None]
    i = torch.arange(n)
    cand = candidate_blocks(n, cfg)
    tok = cand.repeat_interleave(cfg.block_q, 0).repeat_interleave(cfg.block_k, 1)[:n, :n] & (i[None] <= i[:, None])
    ras = torch.where(tok, ras, torch.zeros_like(ras))
    nqb, nkb = num_blocks(n, cfg.block_q), num_blocks(n, cfg.block_k)
    ras = torch.nn.functional.pad(ras, (0, nkb * cfg.block_k - n, 0, nqb * cfg.block_q - n))
    block_max = ras.view(*ras.shape[:2], nqb, cfg.block_q, nkb, cfg.block_k).amax((3, 5))
    return (block_max > tau) | always_computed_blocks(n, cfg), block_max


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [97, 256, 301])
@pytest.mark.parametrize("granularity", ["per_token", "per_group"])
def test_threshold_form_equals_relative_attention_score(seed, n, granularity):
    cfg = small_config(granularity=granularity)
    q, k, _ = structured(seed, n)
    tau = 0.02
    mask, margin = sale.select_blocks(q, k, tau, cfg, return_margin=True)
    direct, block_max = rel_score_mask(q, k, tau, cfg)
    differ = mask != direct
    # Only ties within rounding may differ: margin ~ 0 and score ~ tau.
    assert differ.sum() <= 2, f"{int(differ.sum())} blocks differ"
    if differ.any():
        assert margin[differ].abs().max() < 1e-3
    assert mask.sum() > always_computed_blocks(n, cfg).sum() * q.shape[0] * q.shape[1]  # something was selected
    assert (~mask & candidate_blocks(n, cfg)).any()  # and something skipped


@pytest.mark.parametrize("seed", SEEDS)
def test_larger_threshold_keeps_a_subset(seed):
    cfg = small_config()
    q, k, _ = structured(seed, 333)
    masks = [sale.select_blocks(q, k, tau, cfg) for tau in (0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0, math.inf)]
    for looser, tighter in zip(masks, masks[1:]):
        assert not (tighter & ~looser).any()
    assert masks[0].sum() > masks[-1].sum()
    assert torch.equal(masks[0], causal_blocks(333, cfg).expand_as(masks[0]))
    assert torch.equal(masks[-1], always_computed_blocks(333, cfg).expand_as(masks[-1]))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", LENGTHS)
def test_threshold_zero_is_dense(seed, n):
    cfg = small_config()
    q, k, v = structured(seed, n)
    out = sale.sale_attention(q, k, v, 0.0, cfg)
    ref = sale.dense_attention(q, k, v)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_true_mask_is_dense_against_float64(seed, n, dtype):
    cfg = small_config()
    q, k, v = structured(seed, n, dtype=dtype)
    mask = torch.ones(2, 4, num_blocks(n, 16), num_blocks(n, 8), dtype=torch.bool)
    out = sale.block_sparse_attention(q, k, v, mask, cfg)
    ref64 = sale.dense_attention(q.double(), k.double(), v.double())
    assert rel_err(out, ref64) <= low_precision_bound(q, k, v, ref64)


@pytest.mark.parametrize("seed", SEEDS)
def test_gqa_equals_repeated_kv_heads(seed):
    cfg = small_config()
    q, k, v = structured(seed, 201, hq=6, hkv=2)
    out, stats = sale.sale_attention(q, k, v, [0.01, 0.02, 0.05, 0.0, 0.1, 0.03], cfg, return_stats=True)
    k_rep, v_rep = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    out_rep, stats_rep = sale.sale_attention(q, k_rep, v_rep, [0.01, 0.02, 0.05, 0.0, 0.1, 0.03], cfg,
                                             return_stats=True)
    assert torch.equal(stats.mask, stats_rep.mask)
    torch.testing.assert_close(out, out_rep, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("granularity", ["per_token", "per_group"])
def test_quantization_round_trips_within_half_a_step(seed, granularity):
    cfg = sale.SaleConfig(granularity=granularity, q_group_size=16, k_group_size=32)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 4, 77, 64, generator=g) * 3 + 1
    k = torch.randn(2, 2, 77, 64, generator=g)
    quant = sale.quantize(q, k, cfg)
    for x, hat, scale, mean in ((q, quant.q_hat, quant.q_scale, quant.q_mean), (k, quant.k_hat, quant.k_scale, quant.k_mean)):
        assert hat.dtype == torch.int8 and hat.abs().max() <= 7
        smoothed = x - mean[:, :, None]
        err = (hat.float() * scale[..., None] - smoothed).abs()
        assert (err <= scale[..., None] / 2 + 1e-6).all()
        # the group's largest value maps to +-7 exactly
        assert (hat.abs().amax(-1) == 7).float().mean() > 0.0
    torch.testing.assert_close(quant.q_mean, q.mean(2))
    qmk = torch.einsum("bhd,bhnd->bhn", quant.q_mean, (k - k.mean(2, keepdim=True)).repeat_interleave(2, dim=1))
    torch.testing.assert_close(quant.qmk, qmk, rtol=1e-5, atol=1e-5)
    if granularity == "per_group":  # scales are shared within each group
        s = quant.q_scale[..., :64].reshape(2, 4, 4, 16)
        assert (s == s[..., :1]).all()


def test_zero_rows_quantize_to_zero_with_zero_scale():
    x = torch.randn(1, 1, 5, 64)
    x[0, 0, 2] = 0
    hat, scale = quantize_4bit(x, 1)
    assert scale[0, 0, 2] == 0 and (hat[0, 0, 2] == 0).all() and (scale[0, 0, [0, 1, 3, 4]] > 0).all()


def test_estimate_equals_exact_dot_product_of_dequantized_values():
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 2, 50, 64, generator=g), torch.randn(1, 1, 50, 64, generator=g)
    quant = sale.quantize(q, k)
    s_hat = estimate_scores(quant, slice(0, 50), 1).double()
    deq_q = quant.q_hat.double() * quant.q_scale[..., None].double()
    deq_k = quant.k_hat.double() * quant.k_scale[..., None].double()
    expect = deq_q @ deq_k.transpose(-1, -2) + quant.qmk.double()[:, :, None, :]
    torch.testing.assert_close(s_hat, expect, rtol=1e-6, atol=1e-5)
    # and it estimates q . k_s
    exact = q.double() @ (k - k.mean(2, keepdim=True)).double().transpose(-1, -2)
    assert (s_hat - exact).abs().mean() < 0.2 * exact.abs().mean()


@pytest.mark.parametrize("seed", SEEDS)
def test_metrics_by_definition(seed):
    cfg = small_config()
    q, k, v = structured(seed, 150)
    mask = sale.select_blocks(q, k, 0.05, cfg)
    mean, minimum = sale.attention_recall(q, k, mask, cfg)
    full = causal_blocks(150, cfg).expand_as(mask)
    fmean, fmin = sale.attention_recall(q, k, full, cfg)
    torch.testing.assert_close(fmean, torch.ones_like(fmean))
    torch.testing.assert_close(fmin, torch.ones_like(fmin))
    assert (minimum <= mean).all() and (mean <= 1 + 1e-6).all() and (minimum > 0).all()
    dens = sale.density(mask, 150, cfg)
    assert torch.allclose(dens, (mask & causal_blocks(150, cfg)).float().sum((-1, -2)) / causal_blocks(150, cfg).sum())
    out, ref = sale.sale_attention(q, k, v, 0.05, cfg), sale.dense_attention(q, k, v)
    torch.testing.assert_close(sale.l1_error_per_token(out, ref), (out - ref).abs().sum((-1, -2)).double() / 150)
    assert (sale.relative_l1(ref, ref) == 0).all()
    assert torch.allclose(sale.cosine_similarity(ref, ref), torch.ones(2, 4, dtype=torch.float64))


def test_empty_row_gives_zeros_not_nan():
    cfg = small_config()
    q, k, v = structured(0, 40)
    mask = torch.zeros(2, 4, 3, 5, dtype=torch.bool)
    mask[:, :, 1:, 0] = True
    out = sale.block_sparse_attention(q, k, v, mask, cfg)
    assert (out[:, :, :16] == 0).all() and torch.isfinite(out).all()
