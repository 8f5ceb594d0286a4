"""The Gluon estimate of the selection pass (sale/triton/select_gluon.py): compiled for sm_90 without a GPU (no
local-memory spills, the MMAs on 8-bit tensor cores) and, on a Hopper GPU, the very mask and kept lists of the
Triton selection kernel, equal to the reference's but for float32 ties."""
import os
import subprocess
import sys

import pytest
import torch

import sale
from sale.triton.select_gluon import GLUON_SELECT_CONFIGS, gluon_select_supported, select_gluon
from sale.triton.select_kernel import select_triton
from sale.workloads import StructuredParams, make_qkv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIE = 1e-3


def _sass_loop(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}   # it compiles, it does not interpret
    out = subprocess.run([sys.executable, "-m", "profiler", "sass-loop", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("tile, head_dim, rows", [("gluon", 128, None), ("gluon", 64, 16), ("gluon", 64, None)])
def test_gluon_estimate_compiles_for_hopper_without_spills(tile, head_dim, rows):
    args = ["--kernel", "select-gluon", "--tile", tile, "--head-dim", str(head_dim)]
    stdout = _sass_loop(*args, *(("--estimate-rows", str(rows)) if rows else ()))
    assert "stack 0 B" in stdout, stdout       # no local memory: nothing spilled
    hot_loop = stdout.strip().splitlines()[-1]
    assert "QGMMA" in hot_loop, stdout         # the 8-bit (e4m3) warpgroup MMA in the loop
    assert "LDL" not in hot_loop and "STL" not in hot_loop, stdout


def test_gluon_estimate_is_not_chosen_where_it_cannot_run():
    q = torch.zeros(1, 2, 128, 128, dtype=torch.bfloat16)
    assert not gluon_select_supported(q, sale.SaleConfig(backend="triton"))
    with pytest.raises(ValueError, match="select_gluon needs a Hopper GPU"):
        select_gluon(q, q, torch.zeros(2), sale.SaleConfig(backend="triton"), None)


# ---- on a Hopper GPU ------------------------------------------------------------------------------------------

def _hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


@pytest.mark.cuda
@pytest.mark.skipif(not _hopper(), reason="needs a Hopper GPU (sm_90)")
@pytest.mark.parametrize("n, hq, hkv, d, batch, rows, granularity, tile", [
    (8192, 8, 2, 128, 1, None, "per_token", "gluon"),
    (8191, 8, 8, 128, 1, None, "per_token", "gluon"),
    (16383, 4, 1, 64, 1, None, "per_token", "gluon"),
    (4500, 4, 2, 128, 2, None, "per_group", "gluon"),
    (32768, 4, 1, 128, 1, None, "per_token", "gluon"),
    (16384, 8, 2, 128, 1, 16, "per_token", "gluon"),
    (8192, 8, 1, 128, 1, 8, "per_token", "gluon"),
    (8191, 8, 2, 128, 1, None, "per_token", "gluon"),
    (8192, 8, 2, 64, 1, 16, "per_token", "gluon"),
])
def test_gluon_estimate_gives_the_triton_mask(n, hq, hkv, d, batch, rows, granularity, tile):
    cfg = sale.SaleConfig(backend="triton", estimate_rows=rows, granularity=granularity)
    q, k, _ = make_qkv(num_q_heads=hq, num_kv_heads=hkv, seq_len=n, head_dim=d, dtype=torch.bfloat16, device="cuda",
                       seed=n + hq, batch=batch, params=StructuredParams(slash_offsets=(100, 1000)))
    tau = torch.full((hq,), 0.01, device="cuda")
    tau[0] = 0.0                                   # a dense head
    if hq > 2:
        tau[1] = float("inf")                      # only sink and local blocks
    quant = sale.quantize(q, k, cfg)
    # poison the allocator's free memory, so that an element the kernels leave unwritten reads as garbage
    torch.cuda.empty_cache()
    junk = torch.full((batch * hq * (n // 64 + 1) * (n // 32 + 1) * 6,), 0x5A5A5A5A, dtype=torch.int32, device="cuda")
    del junk
    mask, _, kept = select_gluon(q, k, tau, cfg, quant, tile=tile, return_kept=True)
    mask_t, _, kept_t = select_triton(q, k, tau, cfg, quant, return_kept=True)
    assert torch.equal(mask, mask_t)
    assert torch.equal(kept.counts, kept_t.counts) and torch.equal(kept.indices, kept_t.indices)
    assert torch.equal(sale.kept_to_mask(kept), mask)
    # against the reference selection on the same 4-bit values (the quantization has tests of its own): only
    # float32 ties may differ
    ref, margin = sale.select_blocks(q, k, tau, cfg.replace(backend="reference"), quantized=quant, return_margin=True)
    differ = mask != ref
    ties = differ & (margin.abs() < TIE)
    where = [tuple(i.tolist()) + (float(margin[tuple(i)]),) for i in (differ & ~ties).nonzero()[:5]]
    assert int(differ.sum()) == int(ties.sum()), f"blocks differ beyond rounding (b, h, qb, kb, margin): {where}"
    assert int(ties.sum()) <= max(2, ref.numel() // 10**5), f"{int(ties.sum())} tied blocks differ"
