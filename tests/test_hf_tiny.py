"""sale.hf on small randomly initialised transformers models (no weights to fetch): a Llama (GQA) and a
Gemma 3 (sliding-window and global layers). On the CPU with the reference backend; on a GPU, bf16 with the
triton backend at 2048 tokens."""
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="sale.hf needs transformers (pip install -e '.[hf]')")

import sale.hf  # noqa: E402


def _llama(device, dtype):
    cfg = transformers.LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                   max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).to(device, dtype).eval()


def _gemma3(device, dtype):
    cfg = transformers.Gemma3TextConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                                        num_attention_heads=4, num_key_value_heads=1, head_dim=64, sliding_window=64,
                                        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                                        max_position_embeddings=4096, attn_implementation="sdpa")
    torch.manual_seed(0)
    return transformers.Gemma3ForCausalLM(cfg).to(device, dtype).eval()


def _check(model, n, device, tol):
    ids = torch.randint(0, 512, (1, n), device=device, generator=torch.Generator(device).manual_seed(1))
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        dense = model(ids).logits.float()
        sale.hf.configure(model, 0.0, min_seq_len=0)
        same = model(ids).logits.float()
        st = sale.hf.stats(model)
        sale.hf.configure(model, 0.05, min_seq_len=0)
        sparse = model(ids).logits.float()
    assert (same - dense).abs().max() <= tol * dense.abs().max()
    assert torch.isfinite(sparse).all()
    return st, sale.hf.stats(model)


@pytest.mark.parametrize("make", [_llama, _gemma3])
def test_tiny_models_on_the_cpu(make):
    model = make("cpu", torch.float32)
    dense_st, sparse_st = _check(model, 384, "cpu", 1e-4)
    for s, layer_type in zip(dense_st, getattr(model.config, "layer_types", None) or ["full_attention"] * 2):
        if layer_type == "sliding_attention":
            assert s["path"] == "dense" and s["why"] == "sliding-window layer"
        else:
            assert s["path"] == "sale" and all(d == 1.0 for d in s["density"])
    assert min(d for s in sparse_st if s["path"] == "sale" for d in s["density"]) < 1.0


@pytest.mark.cuda
@pytest.mark.parametrize("make", [_llama, _gemma3])
def test_tiny_models_on_the_gpu_with_the_triton_backend(make):
    model = make("cuda", torch.bfloat16)
    dense_st, sparse_st = _check(model, 2048, "cuda", 0.05)
    sale_layers = [s for s in dense_st if s["path"] == "sale"]
    assert sale_layers and all(d == 1.0 for s in sale_layers for d in s["density"])
    sale.hf.configure(model, 0.05, min_seq_len=0, timing=True)
    with torch.no_grad():
        model(torch.randint(0, 512, (1, 2048), device="cuda"))
    timed = [s for s in sale.hf.stats(model) if s["path"] == "sale"]
    assert timed and all(set(s["times_ms"]) == {"quantize", "select", "attend"} for s in timed)
