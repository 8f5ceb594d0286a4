"""SALE sparse attention for Hopper GPUs: 4-bit estimate, block selection, block-sparse attention.

The data path, one module per stage: ``quantize`` -> ``select`` -> ``attend``, with ``pipeline``
running all three, ``reference`` holding the pure-PyTorch definition of each, ``dense`` the
baselines, ``metrics`` the accuracy measures and ``workloads`` LLM-like synthetic inputs.
"""
from .attend import block_sparse_attention
from .calibrate import load_thresholds
from .blocks import (KeptBlocks, always_computed_blocks, candidate_blocks, causal_blocks, kept_to_mask,
                     mask_to_kept)
from .config import SaleConfig
from .dense import dense_attention, sdpa_attention
from .metrics import (attention_recall, candidate_density, cosine_similarity, density, l1_error_per_token,
                      relative_l1)
from .pipeline import SaleStats, sale_attention
from .quantize import quantize
from .reference import QuantizedQK
from .select import block_log_scores, select_blocks

__all__ = [
    "SaleConfig", "QuantizedQK", "SaleStats", "KeptBlocks",
    "quantize", "select_blocks", "block_log_scores", "block_sparse_attention", "sale_attention",
    "dense_attention", "sdpa_attention",
    "density", "candidate_density", "relative_l1", "l1_error_per_token", "cosine_similarity",
    "attention_recall",
    "causal_blocks", "always_computed_blocks", "candidate_blocks", "mask_to_kept", "kept_to_mask",
    "load_thresholds",
]
__version__ = "0.1.0"
