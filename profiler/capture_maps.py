"""Block-level attention maps of a few heads, for the dashboard's attention-map and threshold pages.

For each head: the exact attention map and the 4-bit estimate's map pooled to SALE's blocks (mean over
each query block's rows of the softmax mass in each key block), the threshold-free block scores (max
log Relative Attention Score, so kept(tau) = score > ln tau, or always computed), and density and error
against dense at a grid of thresholds. Written as one safetensors file (numpy arrays, metadata JSON),
atomically. The dashboard reads it with numpy only.

    python -m profiler capture-maps [--seq-len 4096] [--heads 0 1 2 3] [--out runs/maps/structured_N4096.safetensors]
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
from safetensors.numpy import save

import sale
from sale._io import atomic_write_bytes
from sale.blocks import always_computed_blocks, candidate_blocks, num_blocks
from sale.reference import attention_reference, estimate_scores, exact_scores
from sale.workloads import make_qkv

TAU_GRID = [0.0, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0]


def _pooled_mass(scores: torch.Tensor, n: int, config) -> torch.Tensor:
    """Causal softmax of scale-applied scores [N, N], pooled to [nqb, nkb] by summing each row's mass
    per key block, then averaging the rows of each query block."""
    causal = torch.ones(n, n, dtype=torch.bool, device=scores.device).tril()
    p = torch.softmax(scores.masked_fill(~causal, -math.inf), dim=-1)
    nqb, nkb = num_blocks(n, config.block_q), num_blocks(n, config.block_k)
    p = torch.nn.functional.pad(p, (0, nkb * config.block_k - n))
    per_block = p.view(n, nkb, config.block_k).sum(-1)
    per_block = torch.nn.functional.pad(per_block, (0, 0, 0, nqb * config.block_q - n), value=float("nan"))
    return per_block.view(nqb, config.block_q, nkb).nanmean(1)


def capture_maps(q, k, v, heads, config=None, meta=None) -> tuple[dict, dict]:
    config = config or sale.SaleConfig()
    n, d = q.shape[2], q.shape[3]
    scale = config.scale_for(d)
    group = q.shape[1] // k.shape[1]
    quant = sale.quantize(q, k, config)
    arrays = {"always": always_computed_blocks(n, config).numpy().astype(np.uint8),
              "candidate": candidate_blocks(n, config).numpy().astype(np.uint8),
              "tau_grid": np.array(TAU_GRID, dtype=np.float64)}
    for h in heads:
        kv = h // group
        qh, kh, vh = q[:, h:h + 1], k[:, kv:kv + 1], v[:, kv:kv + 1]
        rows = slice(0, n)
        exact = exact_scores(qh, kh, quant.k_mean[:, kv:kv + 1], rows)[0, 0] * scale
        qq = sale.QuantizedQK(quant.q_hat[:, h:h + 1], quant.q_scale[:, h:h + 1], quant.k_hat[:, kv:kv + 1],
                              quant.k_scale[:, kv:kv + 1], quant.qmk[:, h:h + 1], quant.q_mean[:, h:h + 1],
                              quant.k_mean[:, kv:kv + 1])
        est = estimate_scores(qq, rows, 1)[0, 0] * scale
        arrays[f"head{h}.exact"] = _pooled_mass(exact, n, config).float().numpy()
        arrays[f"head{h}.estimate"] = _pooled_mass(est, n, config).float().numpy()
        scores = sale.block_log_scores(qh, kh, config)[0, 0]
        arrays[f"head{h}.log_ras"] = scores.numpy()
        dense = sale.dense_attention(qh, kh, vh).float()
        dens, err = [], []
        for tau in TAU_GRID:
            mask = torch.ones_like(scores, dtype=torch.bool) if tau == 0 else (scores > math.log(tau)) | always_computed_blocks(n, config)
            out = attention_reference(qh, kh, vh, mask[None, None], config).float()
            dens.append(float(sale.density(mask[None, None], n, config)))
            err.append(float(sale.relative_l1(out, dense)))
        arrays[f"head{h}.density"] = np.array(dens)
        arrays[f"head{h}.rel_l1"] = np.array(err)
    metadata = {"schema": "sale-maps/1", "seq_len": n, "head_dim": d, "block_q": config.block_q,
                "block_k": config.block_k, "local_window": config.local_window, "heads": list(heads),
                "num_q_heads": q.shape[1], "num_kv_heads": k.shape[1], **(meta or {})}
    return arrays, metadata


def write_maps(path: str, arrays: dict, metadata: dict) -> None:
    """Write the maps as safetensors (numpy arrays, metadata "sale" = JSON), atomically."""
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                  metadata={"sale": json.dumps(metadata)}))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m profiler capture-maps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="structured", choices=["structured", "uniform"])
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--q-heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--heads", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-capture", default=None, help="a Q/K/V capture (`python -m sale capture`) instead of a workload")
    p.add_argument("--layer", type=int, default=None, help="with --from-capture: the layer")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    if a.from_capture:
        from sale.llm_eval import load_qkv
        if a.layer is None:
            p.error("--from-capture needs --layer")
        q, k, v, cap = load_qkv(a.from_capture, a.layer)
        heads = [h for h in a.heads if h < q.shape[1]]
        arrays, meta = capture_maps(q, k, v, heads, meta={
            "source": f"{cap['model']}, layer {a.layer}, prompt {cap['prompt']} ({cap['seq_len']} tokens)",
            "layer": a.layer, "workload": cap["prompt"]})
        out = a.out or f"runs/maps/smollm2_layer{a.layer}_{cap['prompt']}_N{cap['seq_len']}.safetensors"
    else:
        q, k, v = make_qkv(a.workload, 1, a.q_heads, a.kv_heads, a.seq_len, a.head_dim, torch.float32, "cpu", seed=a.seed)
        heads = a.heads
        arrays, meta = capture_maps(q, k, v, heads, meta={"source": f"synthetic {a.workload} workload, seed {a.seed}",
                                                           "workload": a.workload})
        out = a.out or f"runs/maps/{a.workload}_N{a.seq_len}.safetensors"
    write_maps(out, arrays, meta)
    print(f"wrote {out}: heads {heads}, {len(arrays)} arrays")


if __name__ == "__main__":
    main()
