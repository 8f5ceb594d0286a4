"""SALE inside any Hugging Face transformers model: ``import sale.hf`` registers an attention function named
``"sale"`` with ``transformers.AttentionInterface``; ``sale.hf.configure(model, thresholds)`` switches a model to
it and gives each layer its per-head thresholds.

    import sale.hf
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).cuda()
    sale.hf.configure(model, "thresholds.json")   # or one float, or [layers][q_heads]
    out = model.generate(**tokenizer(prompt, return_tensors="pt").to("cuda"), max_new_tokens=32)
    print(sale.hf.stats(model))                   # per layer: the path taken and the density per head

SALE runs only where it is SALE's job: causal prefill over one sequence or an unpadded batch of equal lengths,
longer than ``min_seq_len`` tokens (1024 by default: the authors use dense attention up to 1024), in layers
with global attention. Everything else goes to PyTorch SDPA exactly as ``attn_implementation="sdpa"`` would
run it: decode steps and chunked prefill with a KV cache (fewer queries than keys), padded batches (any
attention mask that is not plain causal), sliding-window layers, soft-capped scores, dropout in training,
non-causal attention, and short prompts. ``stats(model)`` says which path each layer took and why.

transformers is an optional dependency (``pip install -e ".[hf]"``): only this module imports it.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ._validation import check_qkv
from .calibrate import read_thresholds_file
from .config import SaleConfig
from .pipeline import run_stages
from .metrics import density

NAME = "sale"
DEFAULT_MIN_SEQ_LEN = 1024


def _attention_modules(model) -> list:
    """The model's attention modules in layer order: modules with a ``layer_idx`` whose class name ends in
    "Attention" (every transformers decoder names them so)."""
    found = {}
    for module in model.modules():
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int) and type(module).__name__.endswith("Attention"):
            found.setdefault(idx, module)
    return [found[i] for i in sorted(found)]


def _text_config(model):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _thresholds_per_layer(thresholds, num_layers: int, num_heads: int) -> list[torch.Tensor]:
    """float32 [num_heads] per layer from a float, a [layers][heads] sequence or tensor, or a thresholds file."""
    if isinstance(thresholds, (str, os.PathLike)):
        doc = read_thresholds_file(os.fspath(thresholds), num_layers, num_heads)
        rows = doc["thresholds"]
    elif isinstance(thresholds, bool):
        raise TypeError("thresholds must be a float, a [layers][q_heads] list or tensor, or a thresholds file path, "
                        "got bool")
    elif isinstance(thresholds, (int, float)):
        rows = [[float(thresholds)] * num_heads] * num_layers
    elif isinstance(thresholds, torch.Tensor) or (isinstance(thresholds, Sequence) and not isinstance(thresholds, str)):
        t = torch.as_tensor(thresholds, dtype=torch.float64) if not isinstance(thresholds, torch.Tensor) \
            else thresholds.detach().double().cpu()
        if t.dim() != 2 or tuple(t.shape) != (num_layers, num_heads):
            raise ValueError(f"thresholds must have shape [layers={num_layers}][q_heads={num_heads}] for this model, "
                             f"got {tuple(t.shape)}")
        rows = t.tolist()
    else:
        raise TypeError(f"thresholds must be a float, a [layers][q_heads] list or tensor, or a thresholds file path, "
                        f"got {type(thresholds).__name__}")
    out = []
    for i, row in enumerate(rows):
        t = torch.tensor(row, dtype=torch.float32)
        if torch.isnan(t).any() or (t < 0).any():
            raise ValueError(f"thresholds of layer {i} must be >= 0 and not NaN, got {row}")
        out.append(t)
    return out


def configure(model, thresholds, config: SaleConfig | None = None, min_seq_len: int = DEFAULT_MIN_SEQ_LEN,
              timing: bool = False):
    """Switch ``model`` (a transformers model) to SALE attention with per-layer, per-head thresholds.

    Args:
        model: a transformers model whose attention goes through ``AttentionInterface`` (every current decoder).
        thresholds: one float for every head, a ``[layers][q_heads]`` list or tensor, or the path of a thresholds
            file from ``python -m sale calibrate`` (checked whole against the model's layer and head counts).
        config: the ``SaleConfig`` of every layer; default: ``backend="triton"`` where the layer runs on CUDA,
            ``"reference"`` elsewhere (decided per call, so a model spread over devices works).
        min_seq_len: prompts of at most this many tokens run dense (default 1024).
        timing: also time each stage of each SALE call (CUDA events on a GPU, the host clock on the CPU; it
            synchronizes, so leave it off when timing the model).

    Returns the model. Calling it again replaces the thresholds and settings.
    """
    if isinstance(min_seq_len, bool) or not isinstance(min_seq_len, int) or min_seq_len < 0:
        raise ValueError(f"min_seq_len must be an int >= 0, got {min_seq_len!r}")
    if config is not None and not isinstance(config, SaleConfig):
        raise TypeError(f"config must be a SaleConfig or None, got {type(config).__name__}")
    modules = _attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no attention layers with a layer_idx: sale.hf needs a "
                         "transformers decoder whose attention goes through AttentionInterface")
    text = _text_config(model)
    num_heads = getattr(text, "num_attention_heads", None)
    if num_heads is None:
        raise ValueError(f"{type(model).__name__}'s config has no num_attention_heads")
    per_layer = _thresholds_per_layer(thresholds, len(modules), num_heads)
    for module, tau in zip(modules, per_layer):
        module.sale_thresholds = tau
        module.sale_config = config
        module.sale_min_seq_len = min_seq_len
        module.sale_timing = bool(timing)
        module.sale_last = None
    model.set_attn_implementation(NAME)
    return model


def stats(model) -> list[dict]:
    """Per layer, from the model's last forward: ``{"layer", "path" ("sale" or "dense"), "why" (the reason for
    dense), "seq_len", "density" (kept causal blocks / causal blocks per query head, averaged over the batch;
    SALE calls only), "times_ms" (quantize, select, attend; with ``timing=True``)}``; None for a layer that has
    not run since ``configure``."""
    return [getattr(m, "sale_last", None) for m in _attention_modules(model)]


def _dense_reason(module, query, key, attention_mask, dropout, kwargs) -> str | None:
    """Why this call goes to dense SDPA, or None when it is SALE's job."""
    if getattr(module, "sale_thresholds", None) is None:
        return "layer not configured (sale.hf.configure)"
    if query.shape[2] != key.shape[2]:
        return "decode or chunked prefill with a KV cache (fewer queries than keys)"
    if kwargs.get("sliding_window") is not None:
        return "sliding-window layer"
    if attention_mask is not None:
        return "attention mask that is not plain causal (padding or a custom mask)"
    if kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None:
        return "soft-capped or biased scores"
    if dropout:
        return "attention dropout (training)"
    if kwargs.get("is_causal") is False or not getattr(module, "is_causal", True):
        return "non-causal attention"
    if query.shape[2] <= module.sale_min_seq_len:
        return f"prompt of {query.shape[2]} tokens <= min_seq_len {module.sale_min_seq_len}"
    if query.shape[1] % key.shape[1]:
        return "query heads not a multiple of kv heads"
    return None


def _on_device(device: torch.device):
    """The CUDA device context of a layer's tensors (kernels launch on the current device), or nothing on the CPU."""
    import contextlib
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _default_config(query: torch.Tensor) -> SaleConfig:
    """The triton backend where its kernels run (CUDA, 16-bit, head dim 64, 128 or 256), the reference elsewhere."""
    from ._validation import TRITON_HEAD_DIMS
    triton_ok = (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16)
                 and query.shape[-1] in TRITON_HEAD_DIMS)
    return SaleConfig(backend="triton" if triton_ok else "reference")


class _Clock:
    """Stage timing for ``configure(timing=True)``: CUDA events on a GPU, the host clock elsewhere."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.ms = {}

    def __call__(self, name):
        clock = self

        class _Stage:
            def __enter__(self):
                if clock.cuda:
                    self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    self.start.record()
                else:
                    self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if clock.cuda:
                    self.end.record()
                    self.end.synchronize()
                    clock.ms[name] = self.start.elapsed_time(self.end)
                else:
                    clock.ms[name] = 1e3 * (time.perf_counter() - self.t0)
        return _Stage()


def sale_attention_forward(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                           **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: query [B, Hq, N, D], key and value [B, Hkv, N_k, D] (not repeated);
    returns ([B, N, Hq, D], None). SALE where it applies (see the module docstring), SDPA otherwise."""
    why = _dense_reason(module, query, key, attention_mask, dropout, kwargs)
    if why is not None:
        if getattr(module, "sale_thresholds", None) is not None:
            module.sale_last = {"layer": module.layer_idx, "path": "dense", "why": why, "seq_len": query.shape[2]}
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    config = module.sale_config or _default_config(query)
    config = config.replace(softmax_scale=scaling, check_finite=False)
    check_qkv(query, key, value, config)
    tau = module.sale_thresholds.to(query.device)
    clock = _Clock(query.device) if module.sale_timing else None
    with _on_device(query.device):   # a model spread over GPUs: the kernels launch on this layer's GPU
        if clock is None:
            out, mask = run_stages(query, key, value, tau, config)
        else:
            out, mask = run_stages(query, key, value, tau, config, stage=clock)
    module.sale_last = {"layer": module.layer_idx, "path": "sale", "why": None, "seq_len": query.shape[2],
                        "density": density(mask, query.shape[2], config).mean(0).tolist(),
                        "times_ms": dict(clock.ms) if clock else None}
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, sale_attention_forward)
AttentionMaskInterface.register(NAME, sdpa_mask)   # None (plain causal) where SDPA would skip the mask


# ---- any causal LM behind the toolkit's model interface (calibration, evaluation and capture CLIs) -------------

class _ModelConfig:
    def __init__(self, text, context):
        self.num_layers = text.num_hidden_layers
        self.num_q_heads = text.num_attention_heads
        self.num_kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        self.head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.context = context
        self.rope_base = float(getattr(text, "rope_theta", float("nan")) or float("nan"))


class CausalLM:
    """A transformers causal LM behind the interface the toolkit's calibration, evaluation and capture use:
    ``encode``, ``decode``, ``chat``, ``config`` (num_layers, num_q_heads, num_kv_heads, head_dim, context), and
    ``model(ids, attention=None, capture=None)`` -> logits [N, vocab] (float32; the model's dtype with
    ``float32=False``) where ``attention(layer, q, k, v)`` (q [1, Hq, N, D], k, v [1, Hkv, N, D], after rotary)
    replaces each global-attention layer's attention and ``capture`` receives each such layer's (q, k, v); with
    ``capture`` and ``layers=L`` below the layer count the forward stops once layer L - 1 has its q, k, v and
    returns None.
    Sliding-window layers always run their own (dense, windowed) attention."""

    def __init__(self, path: str, gguf_file: str | None = None, dtype: torch.dtype = torch.float32, device="cpu",
                 device_map: str | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        self.name = f"{path}" + (f" ({gguf_file})" if gguf_file else "")
        self.tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        self.hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=device_map, **kw)
        if device_map is None:
            self.hf = self.hf.to(device)
        self.hf.eval()
        self.device = self.hf.get_input_embeddings().weight.device
        text = _text_config(self.hf)
        context = getattr(text, "max_position_embeddings", None) or 2 ** 31
        self.config = _ModelConfig(text, context)
        for module in _attention_modules(self.hf):
            module.sale_adapter = None
        self.hf.set_attn_implementation(_ADAPTER)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def chat(self, user: str) -> str:
        """One user turn in the model's chat template (plain text for a model without one), ready for generation."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                      add_generation_prompt=True)
        return user + "\n"

    @torch.no_grad()
    def __call__(self, ids, attention=None, capture: dict | None = None, layers: int | None = None,
                 float32: bool = True):
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if ids.dim() != 1 or ids.numel() < 1:
            raise ValueError(f"ids must be a non-empty 1-d sequence of token ids, got shape {tuple(ids.shape)}")
        if ids.numel() > self.config.context:
            raise ValueError(f"ids hold {ids.numel()} tokens; the model's context is {self.config.context}")
        if layers is not None and capture is None:
            raise ValueError("layers (stop the forward after the first `layers` layers) goes with capture")
        if layers is not None and not (isinstance(layers, int) and layers >= 1):
            raise ValueError(f"layers must be a positive number of layers, got {layers!r}")
        # with a capture of the first `layers` layers, the forward stops after the last of them: at 32K tokens
        # and a 262K vocabulary the rest would end in 34 GB of float32 logits nobody reads
        stop = layers - 1 if layers is not None and layers < self.config.num_layers else None
        modules = _attention_modules(self.hf)
        for module in modules:
            module.sale_adapter = (attention, capture, stop)
        try:
            logits = self.hf(ids[None]).logits[0]
            return logits.float() if float32 else logits
        except _ForwardStopped:
            return None
        finally:
            for module in modules:
                module.sale_adapter = None


class _ForwardStopped(Exception):
    """Raised by the adapter after the last layer a capture asked for (``CausalLM.__call__(..., layers=)``)."""


def _adapter_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The attention function of ``CausalLM``: the caller's attention (and capture) on global-attention prefill
    layers, SDPA elsewhere."""
    attention, capture, stop = getattr(module, "sale_adapter", None) or (None, None, None)
    global_prefill = (kwargs.get("sliding_window") is None and query.shape[2] == key.shape[2]
                      and attention_mask is None)
    if global_prefill and capture is not None:
        capture[module.layer_idx] = (query.detach(), key.detach(), value.detach())
    if stop is not None and module.layer_idx >= stop:
        raise _ForwardStopped
    if global_prefill and attention is not None:
        d = query.shape[-1]
        if scaling is not None and abs(scaling * d ** 0.5 - 1) > 1e-6:   # the model's scale, not 1/sqrt(D)
            query = query * (scaling * d ** 0.5)
        with _on_device(query.device):
            out = attention(module.layer_idx, query, key, value)
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


_ADAPTER = "sale_toolkit_adapter"
AttentionInterface.register(_ADAPTER, _adapter_forward)
AttentionMaskInterface.register(_ADAPTER, sdpa_mask)
