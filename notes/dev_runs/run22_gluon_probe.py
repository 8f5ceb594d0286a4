"""Run 22 probe (session 3; runs on the tree of commit b02a524, where the Gluon tiles exist): one
selection launch on 16K Llama shapes, for ncu, with the tile given on the command line; and the Gluon mask with estimate_rows=16 against the Triton kernel's and the reference's
on the same quantized inputs.   python3 notes/dev_runs/run22_gluon_probe.py TILE [compare]"""
import sys

import torch

import sale
from sale.triton.select_kernel import select_triton
from sale.workloads import StructuredParams, make_qkv

tile = sys.argv[1]
if len(sys.argv) > 2:  # the failing GPU-test case: 16K, 8/2 heads, estimate_rows=16, seed 15
    q, k, _ = make_qkv(num_q_heads=8, num_kv_heads=2, seq_len=16384, head_dim=128, dtype=torch.bfloat16,
                       device="cuda", seed=15, params=StructuredParams(slash_offsets=(100, 1000)))
    cfg = sale.SaleConfig(backend="triton", estimate_rows=16)
    quant = sale.quantize(q, k, cfg)
    tau = torch.tensor([0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 0.01], device="cuda")
    g = select_triton(q, k, tau, cfg, quant, tile=tile)[0]
    t = select_triton(q, k, tau, cfg, quant)[0]
    r = sale.select_blocks(q, k, tau, cfg.replace(backend="reference"), quantized=quant)
    rq = sale.select_blocks(q, k, tau, cfg.replace(backend="reference"))
    print(f"{tile} vs triton default (same quant): {int((g != t).sum())} differ; vs reference (same quant): "
          f"{int((g != r).sum())}; triton default vs reference with its own quantization: {int((t != rq).sum())}")
    sys.exit()
q, k, _ = make_qkv("structured", 1, 32, 8, 16384, 128, torch.bfloat16, "cuda", seed=16384)
cfg = sale.SaleConfig(backend="triton")
quant = sale.quantize(q, k, cfg)
tau = torch.full((32,), 0.01, device="cuda")
for _ in range(2):
    select_triton(q, k, tau, cfg, quant, tile=tile)
torch.cuda.synchronize()
