"""Other block-selection methods (sale.methods) against float64 references of their scoring: the same mask but
for ties, sink and local blocks always kept, bad knobs refused."""
import math

import pytest
import torch

import sale
from sale.blocks import always_computed_blocks, causal_blocks, num_blocks
from sale.methods import METHODS, pooled_blocks
from sale.workloads import make_qkv

TIE = 1e-5


def _pooled_reference(q, k, mass, config):
    """float64, one query block at a time: (mask, margin = mass - mass taken before the block; > 0 kept)."""
    b_, hq, n, d = q.shape
    group = hq // k.shape[1]
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    causal = causal_blocks(n, config)
    mask = torch.zeros(b_, hq, nqb, nkb, dtype=torch.bool)
    margin = torch.full((b_, hq, nqb, nkb), -math.inf, dtype=torch.float64)
    scale = 1 / math.sqrt(d)
    for b in range(b_):
        for h in range(hq):
            kp = torch.stack([k[b, h // group, c * config.block_k:(c + 1) * config.block_k].double().mean(0)
                              for c in range(nkb)])
            for qb in range(nqb):
                qp = q[b, h, qb * config.block_q:(qb + 1) * config.block_q].double().mean(0)
                cols = causal[qb].nonzero()[:, 0]
                p = torch.softmax(scale * (kp[cols] @ qp), 0)
                order = torch.argsort(p, descending=True, stable=True)
                before = torch.cumsum(p[order], 0) - p[order]
                for rank, i in enumerate(order.tolist()):
                    c = int(cols[i])
                    margin[b, h, qb, c] = mass - float(before[rank])
                    mask[b, h, qb, c] = bool(before[rank] < mass) or mass >= 1
    return mask | always_computed_blocks(n, config), margin


@pytest.mark.parametrize("n, hq, hkv, mass", [(700, 4, 2, 0.5), (333, 2, 2, 0.9), (1000, 4, 1, 0.2), (129, 2, 1, 1.0)])
def test_pooled_matches_its_float64_reference(n, hq, hkv, mass):
    config = sale.SaleConfig()
    q, k, _ = make_qkv("structured", num_q_heads=hq, num_kv_heads=hkv, seq_len=n, head_dim=64, dtype=torch.float32,
                       seed=n)
    mask = pooled_blocks(q, k, mass, config)
    ref, margin = _pooled_reference(q, k, mass, config)
    differ = mask != ref
    ties = differ & (margin.abs() < TIE)
    assert int(differ.sum()) == int(ties.sum()), f"{int((differ & ~ties).sum())} blocks differ beyond ties"
    assert int(ties.sum()) <= 2


def test_pooled_keeps_sink_local_and_grows_with_mass():
    config = sale.SaleConfig()
    q, k, _ = make_qkv("structured", num_q_heads=4, num_kv_heads=2, seq_len=1500, head_dim=64, dtype=torch.float32)
    always = always_computed_blocks(1500, config)
    masks = [pooled_blocks(q, k, m, config) for m in (0.1, 0.5, 0.9, 1.0)]
    for m in masks:
        assert (m | ~always).all() and not (m & ~causal_blocks(1500, config)).any()
    for small, large in zip(masks, masks[1:]):
        assert not (small & ~large).any()           # a larger mass keeps a superset
    assert masks[0].float().mean() < masks[-1].float().mean()
    # the computation pass runs on it like on SALE's own mask
    out = sale.block_sparse_attention(q, k, torch.randn_like(k), masks[1], config)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("mass", [0, -0.1, 1.5, math.nan, "0.5", True])
def test_pooled_refuses_bad_mass(mass):
    q = torch.randn(1, 2, 128, 64)
    with pytest.raises(ValueError, match=r"mass must be a number in \(0, 1\]"):
        pooled_blocks(q, q, mass)


def test_registry_names_each_method_and_its_knob():
    assert METHODS["pooled"] == (pooled_blocks, "mass")


def _vertical_slash_reference(q, k, top_k, config):
    """float64, explicit: the last 64 rows' attention, line sums, top-k sets, then every block tested point by
    point. Returns (mask, the k-th vertical and slash scores' gaps to the next ones, for ties)."""
    from sale.methods.vertical_slash import LAST_QUERIES
    b_, hq, n, d = q.shape
    group = hq // k.shape[1]
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    mask = torch.zeros(b_, hq, nqb, nkb, dtype=torch.bool)
    gaps = []
    for b in range(b_):
        for h in range(hq):
            kk = k[b, h // group].double()
            vertical, slash = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
            for r in range(max(0, n - LAST_QUERIES), n):
                a = torch.softmax((kk[:r + 1] @ q[b, h, r].double()) / math.sqrt(d), 0)
                vertical[:r + 1] += a
                for j in range(r + 1):
                    slash[r - j] += a[j]
            kv, ks = min(top_k, n), min(top_k, n)
            sv, iv = torch.sort(vertical, descending=True)
            ss, is_ = torch.sort(slash, descending=True)
            gaps += [float(sv[kv - 1] - sv[kv]) if kv < n else math.inf, float(ss[ks - 1] - ss[ks]) if ks < n else math.inf]
            cols, offs = set(iv[:kv].tolist()), set(is_[:ks].tolist())
            for qb in range(nqb):
                for kb in range(nkb):
                    rows = range(qb * config.block_q, min((qb + 1) * config.block_q, n))
                    keys = range(kb * config.block_k, min((kb + 1) * config.block_k, n))
                    mask[b, h, qb, kb] = any(j <= i and (j in cols or i - j in offs) for i in rows for j in keys)
    return mask | always_computed_blocks(n, config), min(gaps)


@pytest.mark.parametrize("n, hq, hkv, top_k", [(300, 2, 1, 8), (257, 4, 2, 32), (130, 2, 2, 500)])
def test_vertical_slash_matches_its_float64_reference(n, hq, hkv, top_k):
    from sale.methods import vertical_slash_blocks
    config = sale.SaleConfig()
    q, k, _ = make_qkv("structured", num_q_heads=hq, num_kv_heads=hkv, seq_len=n, head_dim=64, dtype=torch.float32,
                       seed=n)
    ref, gap = _vertical_slash_reference(q, k, top_k, config)
    mask = vertical_slash_blocks(q, k, top_k, config)
    if gap > 1e-5:              # no near-tie at the top-k boundary: the very same mask
        assert torch.equal(mask, ref)
    else:
        assert int((mask != ref).sum()) <= 2


def test_vertical_slash_keeps_sink_local_grows_with_top_k_and_refuses_bad_knobs():
    from sale.methods import vertical_slash_blocks
    config = sale.SaleConfig()
    q, k, _ = make_qkv("structured", num_q_heads=4, num_kv_heads=2, seq_len=1200, head_dim=64, dtype=torch.float32)
    masks = [vertical_slash_blocks(q, k, t, config) for t in (1, 16, 128)]
    always, causal = always_computed_blocks(1200, config), causal_blocks(1200, config)
    for m in masks:
        assert (m | ~always).all() and not (m & ~causal).any()
    for small, large in zip(masks, masks[1:]):
        assert not (small & ~large).any()
    for bad in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match="top_k must be an int >= 1"):
            vertical_slash_blocks(q, k, bad, config)


def _xattention_reference(q, k, mass, stride, config):
    """float64, cell by cell: (mask, margin = mass - mass taken before the block)."""
    b_, hq, n, d = q.shape
    group = hq // k.shape[1]
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    cells = num_blocks(n, stride)
    block_mass = torch.zeros(b_, hq, nqb, nkb, dtype=torch.float64)
    for b in range(b_):
        for h in range(hq):
            qq, kk = q[b, h].double(), k[b, h // group].double()
            for a in range(cells):
                # the antidiagonal of cell (a, c): query row a*S + S-1-w against key c*S + w, rows past N absent
                score = torch.zeros(a + 1, dtype=torch.float64)
                for c in range(a + 1):
                    for w in range(stride):
                        i, j = a * stride + stride - 1 - w, c * stride + w
                        if i < n and j < n:
                            score[c] += qq[i] @ kk[j]
                p = torch.softmax(score / math.sqrt(d) / stride, 0)
                for c in range(a + 1):
                    block_mass[b, h, a * stride // config.block_q, c * stride // config.block_k] += p[c]
    block_mass = block_mass / block_mass.sum(-1, keepdim=True).clamp(min=1e-300)
    causal = causal_blocks(n, config)
    mask = torch.zeros(b_, hq, nqb, nkb, dtype=torch.bool)
    margin = torch.full((b_, hq, nqb, nkb), math.inf, dtype=torch.float64)
    for b in range(b_):
        for h in range(hq):
            for qb in range(nqb):
                cols = causal[qb].nonzero()[:, 0]
                p = block_mass[b, h, qb, cols]
                order = torch.argsort(p, descending=True, stable=True)
                before = torch.cumsum(p[order], 0) - p[order]
                for rank, i in enumerate(order.tolist()):
                    mask[b, h, qb, int(cols[i])] = bool(before[rank] < mass)
                    margin[b, h, qb, int(cols[i])] = mass - float(before[rank])
    return mask | always_computed_blocks(n, config), margin


@pytest.mark.parametrize("n, hq, hkv, mass, stride", [(260, 2, 1, 0.6, 8), (333, 2, 2, 0.9, 4), (200, 4, 2, 0.3, 16)])
def test_xattention_matches_its_float64_reference(n, hq, hkv, mass, stride):
    from sale.methods import xattention_blocks
    config = sale.SaleConfig()
    q, k, _ = make_qkv("structured", num_q_heads=hq, num_kv_heads=hkv, seq_len=n, head_dim=64, dtype=torch.float32,
                       seed=n)
    mask = xattention_blocks(q, k, mass, config, stride=stride)
    ref, margin = _xattention_reference(q, k, mass, stride, config)
    differ = mask != ref
    ties = differ & (margin.abs() < TIE)
    assert int(differ.sum()) == int(ties.sum()), f"{int((differ & ~ties).sum())} blocks differ beyond ties"
    assert int(ties.sum()) <= 2


def test_xattention_keeps_sink_local_grows_with_mass_and_refuses_bad_knobs():
    from sale.methods import xattention_blocks
    config = sale.SaleConfig()
    q, k, _ = make_qkv("structured", num_q_heads=2, num_kv_heads=1, seq_len=1100, head_dim=64, dtype=torch.float32)
    masks = [xattention_blocks(q, k, m, config) for m in (0.2, 0.7, 1.0)]
    always, causal = always_computed_blocks(1100, config), causal_blocks(1100, config)
    for m in masks:
        assert (m | ~always).all() and not (m & ~causal).any()
    for small, large in zip(masks, masks[1:]):
        assert not (small & ~large).any()
    with pytest.raises(ValueError, match=r"mass must be a number in \(0, 1\]"):
        xattention_blocks(q, k, 0.0, config)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        xattention_blocks(q, k, 0.5, config, stride=0)
    with pytest.raises(ValueError, match=r"stride \(12\) must divide block_q"):
        xattention_blocks(q, k, 0.5, config, stride=12)


def _lines64(q, k, b, h, group):
    from sale.methods.vertical_slash import LAST_QUERIES
    n, d = q.shape[2], q.shape[3]
    kk = k[b, h // group].double()
    vertical, slash = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for r in range(max(0, n - LAST_QUERIES), n):
        a = torch.softmax((kk[:r + 1] @ q[b, h, r].double()) / math.sqrt(d), 0)
        vertical[:r + 1] += a
        slash[torch.arange(r, -1, -1)] += a          # offset r - j for key j
    return vertical, slash


def _fewest64(scores, gamma):
    share = scores / scores.sum()
    order = torch.argsort(share, descending=True, stable=True)
    before = torch.cumsum(share[order], 0) - share[order]
    chosen = set(order[before < gamma].tolist())
    gap = float((before - gamma).abs().min())
    return chosen, gap


def _flexprefill_reference(q, k, gamma, threshold, config):
    b_, hq, n, d = q.shape
    group = hq // k.shape[1]
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    pooled, margin = _pooled_reference(q, k, gamma, config)
    mask = torch.zeros(b_, hq, nqb, nkb, dtype=torch.bool)
    gaps, distances = [], torch.zeros(b_, hq, dtype=torch.float64)
    last = (nqb - 1) * config.block_q
    for b in range(b_):
        for h in range(hq):
            kk = k[b, h // group].double()
            kp = torch.stack([kk[c * config.block_k:(c + 1) * config.block_k].mean(0) for c in range(nkb)])
            est = torch.softmax(kp @ q[b, h, last:].double().mean(0) / math.sqrt(d), 0)
            true = torch.zeros(nkb, dtype=torch.float64)
            for r in range(last, n):
                a = torch.softmax(kk[:r + 1] @ q[b, h, r].double() / math.sqrt(d), 0)
                for c in range(nkb):
                    true[c] += a[c * config.block_k:(c + 1) * config.block_k].sum()
            true /= true.sum()
            m = 0.5 * (est + true)
            kl = lambda x, y: float((x[x > 0] * (x[x > 0].log() - y[x > 0].log())).sum())
            distances[b, h] = math.sqrt(max(0.0, 0.5 * kl(est, m) + 0.5 * kl(true, m)))
            if distances[b, h] < threshold:
                mask[b, h] = pooled[b, h]
                gaps.append(float(margin[b, h][torch.isfinite(margin[b, h])].abs().min()))
                continue
            vertical, slash = _lines64(q, k, b, h, group)
            cols, g1 = _fewest64(vertical, gamma)
            offs, g2 = _fewest64(slash, gamma)
            gaps += [g1, g2]
            for qb in range(nqb):
                for kb in range(nkb):
                    rows = range(qb * config.block_q, min((qb + 1) * config.block_q, n))
                    keys = range(kb * config.block_k, min((kb + 1) * config.block_k, n))
                    mask[b, h, qb, kb] = any(j <= i and (j in cols or i - j in offs) for i in rows for j in keys)
    return mask | always_computed_blocks(n, config), distances, min(gaps)


@pytest.mark.parametrize("n, hq, hkv, gamma, threshold", [(260, 2, 1, 0.9, 0.1), (300, 4, 2, 0.6, 1.0),
                                                         (200, 2, 2, 0.95, 0.5)])
def test_flexprefill_matches_its_float64_reference(n, hq, hkv, gamma, threshold):
    from sale.methods import flexprefill_blocks
    from sale.methods.flexprefill import pattern_distance
    config = sale.SaleConfig()
    q, k, _ = make_qkv("structured", num_q_heads=hq, num_kv_heads=hkv, seq_len=n, head_dim=64, dtype=torch.float32,
                       seed=n)
    ref, distances, gap = _flexprefill_reference(q, k, gamma, threshold, config)
    torch.testing.assert_close(pattern_distance(q, k, config).double(), distances, rtol=1e-4, atol=1e-5)
    mask = flexprefill_blocks(q, k, gamma, config, pattern_threshold=threshold)
    if gap > 1e-5 and ((distances - threshold).abs() > 1e-4).all():
        assert torch.equal(mask, ref)
    else:
        assert int((mask != ref).sum()) <= 2


def test_flexprefill_keeps_sink_local_and_refuses_bad_knobs():
    from sale.methods import flexprefill_blocks
    config = sale.SaleConfig()
    q, k, _ = make_qkv("structured", num_q_heads=4, num_kv_heads=2, seq_len=1000, head_dim=64, dtype=torch.float32)
    always, causal = always_computed_blocks(1000, config), causal_blocks(1000, config)
    for thr in (0.0, 10.0):          # every head vertical-slash, every head query-aware
        m = flexprefill_blocks(q, k, 0.9, config, pattern_threshold=thr)
        assert (m | ~always).all() and not (m & ~causal).any()
    assert torch.equal(flexprefill_blocks(q, k, 0.9, config, pattern_threshold=10.0), pooled_blocks(q, k, 0.9, config))
    with pytest.raises(ValueError, match=r"gamma must be a number in \(0, 1\]"):
        flexprefill_blocks(q, k, 1.2, config)
    with pytest.raises(ValueError, match="pattern_threshold must be a number >= 0"):
        flexprefill_blocks(q, k, 0.9, config, pattern_threshold=-1)


def test_bench_methods_runs_every_method_on_the_cpu_and_records_failures(tmp_path, capsys):
    import json as json_
    from profiler.bench_methods import main
    out = tmp_path / "m.jsonl"
    assert main(["--lengths", "384", "--q-heads", "2", "--kv-heads", "1", "--head-dim", "64", "--reps", "1",
                 "--device", "cpu", "--knobs", "0.9", "--out", str(out)]) == 0
    recs = [json_.loads(line) for line in out.read_text().splitlines()]
    assert {r["method"] for r in recs} == set(METHODS) | {"sale", "sale_rows16"}
    assert all(r["schema"] == "sale-bench-methods/1" and r["seq_len"] == 384 for r in recs)
    ok = [r for r in recs if r["error"] is None]
    assert all(0 < r["density"] <= 1 and r["rel_l1"] >= 0 and 0 < r["recall"] <= 1 and r["speedup"] > 0 for r in ok)
    bad = [r for r in recs if r["error"]]
    assert [r["method"] for r in bad] == ["vertical_slash"] and "top_k must be an int" in bad[0]["error"]
    out2 = tmp_path / "m2.jsonl"
    assert main(["--lengths", "384", "--q-heads", "2", "--kv-heads", "1", "--head-dim", "64", "--reps", "1",
                 "--device", "cpu", "--methods", "vertical_slash", "--knobs", "0.5", "--out", str(out2)]) == 1
    assert main(["--q-heads", "3", "--kv-heads", "2", "--device", "cpu", "--out", str(out2)]) == 2


def test_bench_methods_on_a_capture_runs_sale_at_its_calibrated_thresholds(tmp_path, capsys):
    import json as json_

    from safetensors.torch import save_file

    from profiler.bench_methods import main
    q, k, v = make_qkv("structured", num_q_heads=2, num_kv_heads=1, seq_len=320, head_dim=64, dtype=torch.float32,
                       seed=3)
    cap = tmp_path / "cap.safetensors"
    save_file({"layer1.q": q, "layer1.k": k, "layer1.v": v}, str(cap))
    thresholds = tmp_path / "t.json"
    thresholds.write_text(json_.dumps({"schema": "sale-thresholds/1", "theta": 0.4, "method": "halving",
                                       "thresholds": [[0.0, 0.0], [0.02, 0.3]]}))
    out = tmp_path / "m.jsonl"
    assert main(["--from-capture", str(cap), "--thresholds", str(thresholds), "--methods", "sale", "--knobs", "0.02",
                 "--reps", "1", "--device", "cpu", "--out", str(out)]) == 0
    recs = {r["method"]: r for r in map(json_.loads, out.read_text().splitlines())}
    assert set(recs) == {"sale", "sale_calibrated"} and recs["sale_calibrated"]["knob"] == pytest.approx(0.16)
    taus = torch.tensor([0.02, 0.3])
    expected = sale.density(sale.select_blocks(q, k, taus, sale.SaleConfig()), 320, sale.SaleConfig()).mean()
    assert recs["sale_calibrated"]["density"] == pytest.approx(float(expected))
    assert recs["sale_calibrated"]["density"] < recs["sale"]["density"]   # head 1's larger threshold thins it
    thresholds.write_text(json_.dumps({"schema": "sale-thresholds/1", "theta": 0.4, "method": "halving",
                                       "thresholds": [[0.0, 0.0]]}))
    assert main(["--from-capture", str(cap), "--thresholds", str(thresholds), "--device", "cpu",
                 "--out", str(out)]) == 2
    assert "no 2 thresholds for layer 1" in capsys.readouterr().err
    assert main(["--thresholds", str(thresholds), "--device", "cpu", "--out", str(out)]) == 2


@pytest.mark.parametrize("method", ["sale", "pooled", "vertical_slash"])
def test_calibrate_knob_meets_the_budget_with_the_fewest_blocks(method):
    from sale.llm_eval import KNOB_SEARCH, calibrate_knob, method_attention_fn
    config = sale.SaleConfig()
    caps = [{layer: make_qkv("structured", num_q_heads=4, num_kv_heads=2, seq_len=600, head_dim=64,
                             dtype=torch.float32, seed=10 * p + layer) for layer in (0, 3)} for p in range(2)]
    budget = 0.03
    got = calibrate_knob(caps, method, budget, config, steps=8)
    assert got["method"] == method and got["knob_name"] == KNOB_SEARCH[method][0]
    assert got["error"] <= budget and 0 < got["density"] <= 1

    def error_and_density(knob):
        stats, errs = {}, []
        for cap in caps:
            fn = method_attention_fn(method, knob, config, stats)
            errs += [float(sale.relative_l1(fn(layer, *qkv), sale.dense_attention(*qkv)).mean()) for layer, qkv in cap.items()]
        return sum(errs) / len(errs), sum(d for v in stats.values() for d in v) / sum(len(v) for v in stats.values())
    err, dens = error_and_density(got["knob"])
    assert abs(err - got["error"]) < 1e-9 and abs(dens - got["density"]) < 1e-9
    # a knob keeping clearly fewer blocks breaks the budget (the calibration did not stop early)
    fewer = {"sale": got["knob"] * 4, "pooled": got["knob"] - 0.1,
             "vertical_slash": max(1.0, float(int(got["knob"]) // 4))}[method]
    if fewer != got["knob"]:
        assert error_and_density(fewer)[0] > budget * 0.8
    with pytest.raises(ValueError, match="budget must be > 0"):
        calibrate_knob(caps, method, 0.0, config)
    with pytest.raises(ValueError, match="method must be one of"):
        calibrate_knob(caps, "magic", 0.1, config)


@pytest.mark.parametrize("n, block_q", [(300, 64), (517, 128), (64, 64), (1000, 64)])
def test_lines_to_blocks_is_the_token_level_definition(n, block_q):
    """The blocks kept key columns and diagonals pass through, from running sums of the kept offsets, equal the
    blocks holding a token of those lines (causal tokens only), built token by token."""
    from sale.methods.vertical_slash import lines_to_blocks
    cfg = sale.SaleConfig(block_q=block_q)
    g = torch.Generator().manual_seed(n)
    cols, offsets = torch.randint(0, n, (2, 3, 7), generator=g), torch.randint(0, n, (2, 3, 9), generator=g)
    offsets[0, 0, 0] = 0
    nqb, nkb = num_blocks(n, cfg.block_q), num_blocks(n, cfg.block_k)
    rows = torch.arange(n)
    ref = torch.zeros(2, 3, nqb, nkb, dtype=torch.bool)
    for b in range(2):
        for h in range(3):
            tokens = torch.zeros(n, n, dtype=torch.bool)
            tokens[:, cols[b, h]] = True
            for o in offsets[b, h].tolist():
                tokens[rows[o:], rows[o:] - o] = True
            tokens &= rows[None, :] <= rows[:, None]
            ref[b, h] = torch.stack([torch.stack([
                tokens[qb * cfg.block_q:(qb + 1) * cfg.block_q, kb * cfg.block_k:(kb + 1) * cfg.block_k].any()
                for kb in range(nkb)]) for qb in range(nqb)])
    assert torch.equal(lines_to_blocks(cols, offsets, n, cfg), ref)
