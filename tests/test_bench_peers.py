"""bench-peers: the masks it draws, their forms for each peer (FlexAttention's BlockMask, the count + index
lists), the sampled reference its outputs are checked against, and on a GPU a small run end to end."""
import json

import pytest
import torch

import sale
from profiler import bench_peers as bp
from sale.blocks import expand_block_mask


@pytest.mark.parametrize("n,block,density", [(4096, 128, 0.3), (4000, 128, 0.5), (777, 64, 0.25), (1024, 128, 0.05)])
def test_random_block_mask_keeps_first_and_diagonal_and_hits_the_density(n, block, density):
    mask = bp.random_block_mask(n, density, 2, 6, block, seed=3, device="cpu")
    causal = bp.grid_causal(n, block, block)
    assert mask.shape == (2, 6, *causal.shape) and not (mask & ~causal).any()
    assert mask[..., :, 0].all() and torch.diagonal(mask, dim1=-2, dim2=-1).all()
    got = mask.sum().item() / (causal.sum().item() * 12)
    floor = (2 * causal.shape[0] - 1) / causal.sum().item()   # the first block and the diagonal
    assert abs(got - max(density, floor)) < 0.05, (got, floor)


@pytest.mark.parametrize("grain", [(128, 128), (64, 64), (64, 32)])
def test_regrain_keeps_the_token_set(grain):
    n = 1000
    mask = (torch.rand(1, 3, *bp.grid_causal(n, *grain).shape, generator=torch.Generator().manual_seed(0)) < 0.4)
    mask &= bp.grid_causal(n, *grain)
    fine = bp.regrain(mask, n, grain, (64, 32))
    coarse_tokens = expand_block_mask(mask, n, sale.SaleConfig(block_q=grain[0], block_k=grain[1]))
    fine_tokens = expand_block_mask(fine, n, sale.SaleConfig(block_q=64, block_k=32))
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    assert torch.equal(coarse_tokens & causal, fine_tokens & causal)
    with pytest.raises(ValueError, match="not a multiple"):
        bp.regrain(mask, n, (64, 32), (128, 128))


def test_step_lists_build_what_the_default_tile_reads():
    from sale.triton.attend_kernel import kept_to_steps, step_lists
    n = 500
    q, k, v = (torch.randn(1, h, n, 64) for h in (2, 1, 1))
    cfg = sale.SaleConfig(backend="triton")
    mask = (torch.rand(1, 2, *bp.grid_causal(n, 64, 32).shape, generator=torch.Generator().manual_seed(4)) < 0.5)
    kept = sale.mask_to_kept(mask & bp.grid_causal(n, 64, 32))
    steps = step_lists(q, k, v, kept, cfg)()          # the interpreter runs the Triton split form
    ref = kept_to_steps(kept, cfg)
    assert torch.equal(steps.counts, ref.counts) and steps.steps.shape == ref.steps.shape   # entries past the counts are undefined
    assert step_lists(q, k, v, kept, cfg, tile="gathered") is None
    # the pass given those lists, built once, computes what it computes building them itself
    from sale.triton.attend_kernel import attend_triton
    own = attend_triton(q, k, v, None, cfg, kept=kept)
    assert torch.equal(attend_triton(q, k, v, None, cfg, steps=steps), own)
    with pytest.raises(ValueError, match="reads the kept lists, not step lists"):
        attend_triton(q, k, v, None, cfg, kept=kept, tile="gathered", steps=steps)
    from sale.triton.attend_kernel import kept_to_union
    with pytest.raises(ValueError, match="walks KeptSteps"):
        attend_triton(q, k, v, None, cfg, steps=kept_to_union(kept, cfg, 4, split=True))


def test_block_lists_put_kept_blocks_first_in_order():
    mask = torch.tensor([[True, False, True, True], [False, False, False, False], [False, True, False, False]])
    counts, idx = bp.block_lists(mask)
    assert counts.tolist() == [3, 0, 1]
    assert idx[0, :3].tolist() == [0, 2, 3] and idx[2, :1].tolist() == [1]
    assert sorted(idx[1].tolist()) == [0, 1, 2, 3] and idx.dtype == torch.int32


@pytest.mark.parametrize("grain", [(128, 128), (64, 32)])
def test_flex_block_mask_is_the_mask_and_cuts_only_diagonal_blocks(grain):
    pytest.importorskip("torch.nn.attention.flex_attention")
    n = 700
    causal = bp.grid_causal(n, *grain)
    mask = (torch.rand(1, 2, *causal.shape, generator=torch.Generator().manual_seed(1)) < 0.5) & causal
    bm = bp.flex_block_mask(mask, n, grain)
    assert torch.equal(bm.to_dense().bool()[..., :causal.shape[0], :causal.shape[1]], mask)
    full = bp.full_blocks(n, *grain)
    # the blocks given the causal mask_mod are exactly the kept blocks the diagonal cuts
    partial = torch.zeros_like(mask)
    counts, idx = bm.kv_num_blocks, bm.kv_indices
    for h in range(2):
        for b in range(causal.shape[0]):
            partial[0, h, b, idx[0, h, b, :counts[0, h, b]].long()] = True
    assert torch.equal(partial, mask & ~full)
    # every token the diagonal-cut blocks hold past the diagonal is what the mask_mod removes
    tokens = expand_block_mask(partial, n, sale.SaleConfig(block_q=grain[0], block_k=grain[1]))
    assert (tokens & ~torch.ones(n, n, dtype=torch.bool).tril()).any()


@pytest.mark.parametrize("causal_inside", [True, False])
def test_sampled_reference_matches_the_float64_attention_of_the_kept_tokens(causal_inside):
    n, grain = 300, (128, 128)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, h, n, 32, generator=g) for h in (4, 2, 2))
    mask = bp.random_block_mask(n, 0.6, 1, 4, 128, seed=5, device="cpu")
    tokens = expand_block_mask(mask, n, sale.SaleConfig(block_q=128, block_k=128))
    if causal_inside:
        tokens &= torch.ones(n, n, dtype=torch.bool).tril()
    kk, vv = k.repeat_interleave(2, 1).double(), v.repeat_interleave(2, 1).double()
    s = (q.double() @ kk.transpose(-1, -2)) / 32 ** 0.5
    ref = torch.softmax(s.masked_fill(~tokens, float("-inf")), -1) @ vv
    blocks = [(0, 0), (1, 2), (3, 1)]
    refs = bp.sampled_reference(q, k, v, mask, n, grain, causal_inside, blocks, 32 ** -0.5)
    assert bp.max_err(ref.float(), refs, grain) < 1e-5
    if causal_inside:   # and the project's reference on the same mask agrees
        ours = sale.block_sparse_attention(q, k, v, bp.regrain(mask, n, grain, (64, 32)), sale.SaleConfig())
        assert bp.max_err(ours, refs, grain) < 1e-5


@pytest.mark.parametrize("args,message", [(["--densities", "0", "0.5"], "--densities must lie in (0, 1], got [0.0]"),
                                          (["--q-heads", "6", "--kv-heads", "4"], "--q-heads (6) must be a multiple"),
                                          (["--budget-s", "0"], "--budget-s must be > 0")])
def test_bad_arguments_are_refused_before_any_work(args, message, tmp_path, capsys):
    assert bp.main([*args, "--out", str(tmp_path / "x.jsonl")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()


@pytest.mark.cuda
def test_bench_peers_runs_and_records_every_peer_or_why(tmp_path):
    out = tmp_path / "peers.jsonl"
    assert bp.main(["--lengths", "4096", "--densities", "1", "0.25", "--q-heads", "4", "--kv-heads", "2",
                    "--budget-s", "0.1", "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["mask_grain"] for r in recs} == {"128x128", "64x32"}
    for r in recs:
        assert r["schema"] == "sale-bench-peers/1" and "error" not in r
        assert set(r["peers_ms"]) | set(r["peers_errors"]) == set(bp.PEERS)
        assert r["max_abs_err"]["project"] < 2e-2 and 0 < r["project_steps_ms"] < r["project_ms"]
        assert 0 < r["project_prebuilt_ms"]
        for name in r["peers_ms"]:
            assert r["max_abs_err"][name] < 2e-2, (name, r["max_abs_err"])
