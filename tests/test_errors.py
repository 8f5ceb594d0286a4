"""Bad input gets a clear error naming the argument."""
import math

import pytest
import torch

import sale


def qkv(hq=4, hkv=2, n=40, d=64, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, hq, n, d, generator=g).to(dtype), torch.randn(1, hkv, n, d, generator=g).to(dtype),
            torch.randn(1, hkv, n, d, generator=g).to(dtype))


@pytest.mark.parametrize("bad, match, exc", [
    (dict(hq=3, hkv=2), "multiple of the number of kv heads", ValueError),
    (dict(d=48), "head dim D", ValueError),
    (dict(dtype=torch.int32), "dtype", TypeError),
])
def test_bad_qkv(bad, match, exc):
    q, k, v = qkv(**bad)
    with pytest.raises(exc, match=match):
        sale.sale_attention(q, k, v, 0.01)


def test_mismatched_shapes_and_dtypes():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="k must have shape"):
        sale.sale_attention(q, k[:, :, :30], v, 0.01)
    with pytest.raises(ValueError, match="v must have the same shape"):
        sale.sale_attention(q, k, v[:, :1], 0.01)
    with pytest.raises(TypeError, match="k must have the same dtype"):
        sale.sale_attention(q, k.double(), v, 0.01)
    with pytest.raises(ValueError, match="q must have shape"):
        sale.quantize(q[0], k)
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        sale.select_blocks(q.numpy(), k, 0.01)


@pytest.mark.parametrize("thresholds, match", [
    (-0.1, ">= 0"), (math.nan, "NaN"), ([0.1, 0.2], "one value per query head"),
    (torch.zeros(2, 2), "0-d or 1-d"), ("0.1", "float"), ([0.1, 0.1, 0.1, None], "floats"),
])
def test_bad_thresholds(thresholds, match):
    q, k, v = qkv()
    with pytest.raises((ValueError, TypeError), match=match):
        sale.select_blocks(q, k, thresholds)


@pytest.mark.parametrize("name", ["q", "k", "v"])
def test_non_finite_inputs(name):
    tensors = dict(zip("qkv", qkv()))
    tensors[name][0, 0, 3, 5] = math.nan
    with pytest.raises(ValueError, match=f"{name} holds NaN or Inf"):
        sale.sale_attention(tensors["q"], tensors["k"], tensors["v"], 0.01)


def test_bad_mask():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"mask must have shape .*\[1, 4, 1, 2\]"):
        sale.block_sparse_attention(q, k, v, torch.ones(1, 4, 2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="torch.bool"):
        sale.block_sparse_attention(q, k, v, torch.ones(1, 4, 1, 2))


@pytest.mark.parametrize("field, value", [("block_q", 0), ("local_window", -1), ("granularity", "per_row"),
                                          ("backend", "cuda"), ("softmax_scale", -1.0), ("selection", "three_pass"),
                                          ("int8_qk", "yes"), ("int8_qk", 1), ("attend_tile", ""), ("attend_tile", 3)])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=f"SaleConfig.{field}"):
        sale.SaleConfig(**{field: value})


def test_one_pass_is_reserved():
    with pytest.raises(NotImplementedError, match="one_pass"):
        sale.SaleConfig(selection="one_pass")


def test_triton_backend_rejects_float32():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="backend 'triton'"):
        sale.sale_attention(q, k, v, 0.01, sale.SaleConfig(backend="triton"))


def test_estimate_rows_and_block_q_errors_name_the_argument(capsys):
    for bad in (0, 3, 128, True, 2.0):
        with pytest.raises(ValueError, match="estimate_rows"):
            sale.SaleConfig(estimate_rows=bad)
    assert sale.SaleConfig(estimate_rows=16).estimate_row_stride == 4
    assert sale.SaleConfig().estimate_row_stride == 1
    from profiler.__main__ import main
    assert main(["sweep", "--lengths", "128", "--estimate-rows", "48", "--no-progress", "--out", "/dev/null"]) == 2
    assert "--estimate-rows 48" in capsys.readouterr().err


def test_unknown_attend_tile_is_named():
    from sale.triton.attend_kernel import attend_triton
    q, k, v = qkv()
    with pytest.raises(ValueError, match="tile must be None or one of"):
        attend_triton(q, k, v, torch.ones(1, 4, 1, 2, dtype=torch.bool), sale.SaleConfig(backend="triton"), tile="fast")


def test_unknown_select_tile_is_named():
    from sale.triton.select_kernel import select_triton
    q, k, _ = qkv(dtype=torch.bfloat16)
    cfg = sale.SaleConfig(backend="triton")
    with pytest.raises(ValueError, match="tile must be None or one of"):
        select_triton(q, k, torch.full((q.shape[1],), 0.01), cfg, sale.quantize(q, k, cfg), tile="vote3")
