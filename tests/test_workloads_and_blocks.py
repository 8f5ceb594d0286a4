import pytest
import torch

import sale
from sale.workloads import StructuredParams, make_qkv


def test_workload_is_seeded_and_shaped():
    a = make_qkv(num_q_heads=4, num_kv_heads=2, seq_len=300, head_dim=64, seed=5)
    b = make_qkv(num_q_heads=4, num_kv_heads=2, seq_len=300, head_dim=64, seed=5)
    c = make_qkv(num_q_heads=4, num_kv_heads=2, seq_len=300, head_dim=64, seed=6)
    assert [x.shape for x in a] == [(1, 4, 300, 64), (1, 2, 300, 64), (1, 2, 300, 64)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_structured_workload_is_sparser_than_uniform():
    kw = dict(num_q_heads=4, num_kv_heads=1, seq_len=1024, head_dim=64, dtype=torch.float32, seed=0)
    cfg = sale.SaleConfig()
    dens = {}
    for name in ("structured", "uniform"):
        q, k, _ = make_qkv(name, **kw)
        dens[name] = float(sale.candidate_density(sale.select_blocks(q, k, 0.03, cfg), 1024, cfg).mean())
    assert dens["structured"] < 0.8 and dens["uniform"] > 0.95


def test_structured_workload_has_a_sink():
    q, k, _ = make_qkv(num_q_heads=2, num_kv_heads=1, seq_len=512, head_dim=64, dtype=torch.float32, seed=1)
    p = torch.softmax((q[0, 0] @ k[0, 0].T / 8).masked_fill(torch.ones(512, 512).triu(1).bool(), -torch.inf), -1)
    assert p[256:, :4].sum(-1).mean() > 0.1  # the first keys draw a large share of late rows' attention


def test_bad_workload_arguments():
    with pytest.raises(ValueError, match="workload"):
        make_qkv("random")
    with pytest.raises(ValueError, match="multiple"):
        make_qkv(num_q_heads=3, num_kv_heads=2)
    with pytest.raises(ValueError, match="noise_logit"):
        StructuredParams(noise_logit=-1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_kept_blocks_round_trip(seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 3, 7, 13, generator=g) < 0.4
    mask[0, 0] = False
    mask[1, 2] = True
    kept = sale.mask_to_kept(mask)
    assert torch.equal(kept.counts, mask.sum(-1).int())
    for b, h, r in [(0, 1, 3), (1, 0, 6), (0, 0, 2)]:
        idx = kept.indices[b, h, r]
        n = int(kept.counts[b, h, r])
        assert idx[:n].tolist() == torch.nonzero(mask[b, h, r]).flatten().tolist()
        assert (idx[n:] == -1).all()
    assert torch.equal(sale.kept_to_mask(kept), mask)
