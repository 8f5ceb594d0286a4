"""SALE on a real model (SmolLM2-135M by default; any causal LM behind ``sale.hf.CausalLM``): per-layer, per-head
calibration and accuracy against dense.

Calibration captures Q, K, V (after rotary) of every layer from dense forwards over the calibration
prompts (key-value retrieval and needle in a haystack), calibrates each head on each prompt
(``sale.calibrate``) and keeps the smallest threshold a head needs on any prompt.

Evaluation runs the model with dense attention and with SALE at those thresholds: needle retrieval over
lengths and depths (scored by teacher forcing: correct iff every answer token's logit is the maximum, ties within 1e-3
allowed, i.e. greedy decoding reproduces the answer; the answer's mean log-probability beside it),
and on held-out text (a stdlib source file) the next-token agreement, the mean KL(dense || SALE) of the
next-token distributions and both perplexities; with the density of every layer and head.
"""
from __future__ import annotations

import datetime
import json
import math
import os

import torch

from ._io import append_line
from .calibrate import HeadCalibration, calibrate
from .config import SaleConfig
from .prompts import HELD_OUT_MODULES, held_out_text, kv_retrieval, needle


ACCURACY_SCHEMA = "sale-accuracy/1"


def load_gguf_model(gguf_path, name: str, dtype: torch.dtype, device):
    """The model in the GGUF file ``gguf_path()`` names, loaded by transformers as ``sale.hf.CausalLM`` and named
    `name`; an ImportError that says what to install where transformers is missing (checked first)."""
    try:
        from .hf import CausalLM
    except ImportError as exc:
        raise ImportError(f"{name} runs through transformers, which is not installed ({exc}): "
                          "pip install -e '.[hf]'") from exc
    path = gguf_path()
    model = CausalLM(os.path.dirname(path), os.path.basename(path), dtype, device)
    model.name = name
    return model


def _global_layers(layers, captured) -> None:
    """Refuse layers that were not captured: only layers with global attention are (SALE's layers; sliding-window
    layers stay dense)."""
    local = [layer for layer in layers if layer not in captured]
    if local:
        raise ValueError(f"layers {local} do not attend globally (sliding-window attention runs dense); SALE runs in "
                         f"layers {sorted(captured)}")


def sale_attention_fn(thresholds_per_layer, config=None, stats: dict | None = None):
    """An attention function ``(layer, q, k, v) -> out`` running SALE with per-layer, per-head thresholds (a list of
    lists, e.g. a thresholds file's "thresholds"); with `stats`, records each layer's density per head there."""
    import sale

    def attention(layer, q, k, v):
        out, st = sale.sale_attention(q, k, v, thresholds_per_layer[layer], config, return_stats=True)
        if stats is not None:
            stats[layer] = st.density[0].tolist()
        return out
    return attention


def calibration_prompts(model, seq_len: int) -> list[tuple[str, list[int]]]:
    return [("kv_retrieval", kv_retrieval(model, seq_len, seed=0)[0]),
            ("needle_depth0.5", needle(model, seq_len, 0.5, seed=1)[0])]


def calibrate_model(model, theta: float, method: str, seq_len: int, layers=None,
                    config: SaleConfig | None = None, progress=None, on_layer=None):
    """Thresholds [num_layers][num_q_heads] (layers not listed stay dense, tau = 0; layers None: every layer with
    global attention) and the chosen HeadCalibration of each calibrated head; the prompts' names. `on_layer(per_layer, done_layers,
    prompt_names)` runs after each layer (the CLI writes the thresholds file there, so an interrupted
    calibration keeps every finished layer)."""
    config = config or SaleConfig()
    cfg = model.config
    prompts = calibration_prompts(model, seq_len)
    captures = []
    for _, ids in prompts:
        cap = {}
        model(ids, capture=cap, layers=None if layers is None else max(layers) + 1)
        captures.append(cap)
    layers = sorted(captures[0]) if layers is None else list(layers)
    _global_layers(layers, captures[0])
    per_layer = [[HeadCalibration(0.0, 0.0, 1.0, 0)] * cfg.num_q_heads for _ in range(cfg.num_layers)]
    done = []
    for layer in layers:
        chosen = None
        for cap in captures:
            q, k, v = (t.to(model.device) for t in cap[layer])
            if config.backend == "triton":
                q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
            res = calibrate(q, k, v, theta, method, config)
            chosen = res if chosen is None else [a if a.threshold <= b.threshold else b for a, b in zip(chosen, res)]
        per_layer[layer] = chosen
        done.append(layer)
        if on_layer is not None:
            on_layer(per_layer, list(done), [name for name, _ in prompts])
        if progress is not None:
            progress(layer)
    return per_layer, [name for name, _ in prompts]


TIE = 1e-3  # logits this close to the maximum count as reproduced (a 135M model has exact ties)


def _teacher_forced(logits: torch.Tensor, start: int, answer: list[int]) -> tuple[bool, float]:
    """(greedy decoding would reproduce every answer token, up to ties; mean log-prob of the answer)."""
    rows = logits[start - 1:start - 1 + len(answer)].float()
    target = torch.as_tensor(answer, device=rows.device)
    picked = rows.gather(-1, target[:, None])[:, 0]
    correct = bool((picked >= rows.max(-1).values - TIE).all())
    return correct, float(torch.log_softmax(rows, -1).gather(-1, target[:, None]).mean())


def _held_out_metrics(dense: torch.Tensor, sparse: torch.Tensor, ids: list[int],
                      rows_per_chunk: int = 2048) -> dict:
    """Next-token agreement, KL(dense || sparse) per token and both perplexities from logits [N, vocab], a chunk of
    rows at a time: at 32K tokens and a 262K vocabulary one float32 log-softmax is 34 GB."""
    n = dense.shape[0]
    target = torch.as_tensor(ids[1:], device=dense.device)
    agree = kl = nll_d = nll_s = 0.0
    for r0 in range(0, n, rows_per_chunk):
        d, s = dense[r0:r0 + rows_per_chunk].float(), sparse[r0:r0 + rows_per_chunk].float()
        agree += float((d.argmax(-1) == s.argmax(-1)).sum())
        lp_d, lp_s = torch.log_softmax(d, -1), torch.log_softmax(s, -1)
        kl += float((lp_d.exp() * (lp_d - lp_s)).sum(-1).sum())
        t = target[r0:r0 + rows_per_chunk]  # the last row has no next token
        nll_d -= float(lp_d[:len(t)].gather(-1, t[:, None]).sum())
        nll_s -= float(lp_s[:len(t)].gather(-1, t[:, None]).sum())
    return {"next_token_agreement": agree / n, "kl_dense_sale": kl / n,
            "perplexity_dense": math.exp(nll_d / max(n - 1, 1)), "perplexity_sale": math.exp(nll_s / max(n - 1, 1))}


def evaluate_model(model, thresholds, lengths, depths, config: SaleConfig | None = None,
                   held_out_len: int = 2048, seed: int = 0, progress=None, attention_for=None) -> list[dict]:
    """Accuracy records (schema sale-accuracy/1) of SALE at `thresholds` against dense attention; with
    `attention_for(stats)` (an attention function recording each layer's density per head in stats), of that
    attention instead (thresholds unused)."""
    config = config or SaleConfig()
    if attention_for is None:
        attention_for = lambda stats: sale_attention_fn(thresholds, config, stats)
    records = []
    base = {"schema": ACCURACY_SCHEMA, "model": getattr(model, "name", "causal LM"),
            "backend": config.backend,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    prefix = model.encode("The special magic number is ")
    for n in lengths:
        for depth in depths:
            answer_room = len(prefix) + 16  # the answer prefix and up to 16 answer tokens stay in context
            ids, number = needle(model, min(n, model.config.context) - answer_room, depth, seed=seed)
            answer = model.encode(number)
            full = ids + prefix + answer
            stats = {}
            dense = model(full)
            sale_logits = model(full, attention=attention_for(stats))
            start = len(ids) + len(prefix)
            dense_ok, dense_lp = _teacher_forced(dense, start, answer)
            sale_ok, sale_lp = _teacher_forced(sale_logits, start, answer)
            records.append(base | {"kind": "needle", "seq_len": len(full), "depth": depth,
                                   "dense_correct": dense_ok, "sale_correct": sale_ok,
                                   "dense_answer_logprob": dense_lp, "sale_answer_logprob": sale_lp,
                                   "density": _mean_density(stats), "density_per_layer": _per_layer(stats)})
            if progress is not None:
                progress()
    ids = model.encode(held_out_text())[:held_out_len]
    stats = {}
    # in the model's dtype: two float32 copies of 32K x 262K logits would not fit beside the model's own
    dense = model(ids, float32=False)
    sparse = model(ids, attention=attention_for(stats), float32=False)
    metrics = _held_out_metrics(dense, sparse, ids)
    del dense, sparse
    records.append(base | {"kind": "held_out", "seq_len": len(ids), "text": "Python stdlib sources: " + ", ".join(f"{m}.py" for m in HELD_OUT_MODULES),
                           **metrics,
                           "density": _mean_density(stats), "density_per_layer": _per_layer(stats)})
    return records


def method_attention_fn(method: str, knob: float, config: SaleConfig | None = None, stats: dict | None = None):
    """An attention function ``(layer, q, k, v) -> out``: the blocks `method` (one of sale.methods.ALL_METHODS)
    keeps at `knob`, on the project's computation pass; with `stats`, each layer's density per head there."""
    import sale
    from .methods import method_selector
    config = config or SaleConfig()
    choose = method_selector(method, config)

    def attention(layer, q, k, v):
        mask = choose(q, k, knob)
        if stats is not None:
            stats[layer] = sale.density(mask, q.shape[2], config)[0].tolist()
        return sale.block_sparse_attention(q, k, v, mask, config)
    return attention


# Each method's knob for calibration: (name, lowest, highest, map from a search coordinate x in [lowest, highest]
# to the knob); x grows as the method keeps more blocks (so the error falls).
KNOB_SEARCH = {
    "sale": ("tau", 0.0, 8.0, lambda x: 10.0 ** -x),             # tau from 1 down to 1e-8
    "sale_rows16": ("tau", 0.0, 8.0, lambda x: 10.0 ** -x),
    "pooled": ("mass", 0.3, 1.0, lambda x: x),
    "xattention": ("mass", 0.3, 1.0, lambda x: x),
    "flexprefill": ("gamma", 0.3, 1.0, lambda x: x),
    "vertical_slash": ("top_k", 0.0, 16.0, lambda x: float(round(2.0 ** x))),   # top_k from 1 to 65536
}


def calibrate_knob(captures: list[dict], method: str, budget: float, config: SaleConfig | None = None,
                   steps: int = 12) -> dict:
    """One knob value for the whole model: the one keeping the fewest blocks whose output error, the relative L1
    against dense attention averaged over the heads, layers and prompts of `captures` ({layer: (q, k, v)} per
    prompt), stays within `budget` (bisection over KNOB_SEARCH; errors assumed to fall as the knob keeps more).
    Returns {"method", "knob_name", "knob", "error", "density", "budget"}."""
    import sale
    if not budget > 0:
        raise ValueError(f"budget must be > 0, got {budget!r}")
    if method not in KNOB_SEARCH:
        raise ValueError(f"method must be one of {list(KNOB_SEARCH)}, got {method!r}")
    config = config or SaleConfig()
    name, lo, hi, knob_of = KNOB_SEARCH[method]
    dense = [{layer: sale.dense_attention(*qkv) for layer, qkv in cap.items()} for cap in captures]

    def measure(x):
        stats, errors = {}, []
        for cap, ref in zip(captures, dense):
            attention = method_attention_fn(method, knob_of(x), config, stats)
            for layer, (q, k, v) in cap.items():
                errors.append(float(sale.relative_l1(attention(layer, q, k, v), ref[layer]).mean()))
        values = [d for layer in stats.values() for d in layer]
        return sum(errors) / len(errors), sum(values) / len(values)

    best = (hi, *measure(hi))
    if best[1] <= budget:
        for _ in range(steps):
            mid = (lo + hi) / 2
            err, dens = measure(mid)
            if err <= budget:
                hi, best = mid, (mid, err, dens)
            else:
                lo = mid
    return {"method": method, "knob_name": name, "knob": knob_of(best[0]), "error": best[1], "density": best[2],
            "budget": budget}


def compare_methods(model, methods, budget: float, seq_len: int, lengths, depths, config: SaleConfig | None = None,
                    held_out_len: int = 2048, progress=None, on_method=None) -> list[dict]:
    """Each method calibrated to the same output-error budget on the calibration prompts at `seq_len` (one knob
    for the model, ``calibrate_knob``), then evaluated against dense as ``evaluate_model`` does: accuracy
    records (sale-accuracy/1) with the method ("selection"), its knob and its calibration error.
    `on_method(records)` receives each method's records as soon as they are made (the CLI writes them there, so
    an interrupted comparison keeps every finished method)."""
    config = config or SaleConfig()
    captures = []
    for _, ids in calibration_prompts(model, seq_len):
        cap = {}
        model(ids, capture=cap)
        captures.append({layer: tuple(t.to(model.device) for t in qkv) for layer, qkv in cap.items()})
    records = []
    for method in methods:
        knob = calibrate_knob(captures, method, budget, config)
        recs = evaluate_model(model, None, lengths, depths, config, held_out_len, progress=progress,
                              attention_for=lambda stats: method_attention_fn(method, knob["knob"], config, stats))
        # "selection", not "method": accuracy records already use "method" for the thresholds' calibration method
        recs = [r | {"selection": method, "knob_name": knob["knob_name"], "knob": knob["knob"], "theta": None,
                     "budget": budget, "calibration_error": knob["error"], "calibration_density": knob["density"],
                     "calibration_len": seq_len} for r in recs]
        if on_method is not None:
            on_method(recs)
        records += recs
    return records


def _per_layer(stats: dict) -> list:
    return [stats[layer] for layer in sorted(stats)]


def _mean_density(stats: dict) -> float:
    values = [d for layer in stats.values() for d in layer]
    return sum(values) / len(values) if values else math.nan


def write_records(path: str, records: list[dict], extra: dict | None = None) -> None:
    for r in records:
        append_line(path, json.dumps(r | (extra or {})))


def capture_qkv(model, prompt: str, seq_len: int, layers, path: str) -> dict:
    """Q, K, V after rotary of `layers` for one prompt ("kv_retrieval", "needle" at depth 0.5, or
    "held_out" text) saved as safetensors: tensors "layer{L}.q" [1, Hq, N, D], "layer{L}.k" and
    "layer{L}.v" [1, Hkv, N, D] (float32), metadata "sale" = JSON (model, prompt, seq_len, layers,
    heads, head_dim, rope). Written atomically. Returns the metadata."""
    from safetensors.torch import save
    if prompt == "kv_retrieval":
        ids = kv_retrieval(model, seq_len, seed=0)[0]
    elif prompt == "needle":
        ids = needle(model, seq_len, 0.5, seed=1)[0]
    elif prompt == "held_out":
        ids = model.encode(held_out_text())[:seq_len]
    else:
        raise ValueError(f"prompt must be kv_retrieval, needle or held_out, got {prompt!r}")
    layers = sorted(set(layers))
    bad = [l for l in layers if not 0 <= l < model.config.num_layers]
    if bad:
        raise ValueError(f"layers must be in [0, {model.config.num_layers}), got {bad}")
    cap = {}
    model(ids, capture=cap, layers=layers[-1] + 1)
    _global_layers(layers, cap)
    tensors = {f"layer{l}.{name}": t.float().contiguous().cpu() for l in layers for name, t in zip("qkv", cap[l])}
    meta = {"schema": "sale-qkv/1", "model": getattr(model, "name", "causal LM"), "prompt": prompt,
            "seq_len": len(ids), "layers": layers, "num_q_heads": model.config.num_q_heads,
            "num_kv_heads": model.config.num_kv_heads, "head_dim": model.config.head_dim,
            "rope": f"base {model.config.rope_base:g}", "after_rotary": True}
    from ._io import atomic_write_bytes
    atomic_write_bytes(path, save(tensors, metadata={"sale": json.dumps(meta)}))
    return meta


def load_qkv(path: str, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """(q, k, v, metadata) of one layer of a capture file written by ``capture_qkv``."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["sale"])
        if layer not in meta["layers"]:
            raise ValueError(f"layer {layer} is not in {path} (layers {meta['layers']})")
        return (f.get_tensor(f"layer{layer}.q"), f.get_tensor(f"layer{layer}.k"), f.get_tensor(f"layer{layer}.v"), meta)
