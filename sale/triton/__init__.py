"""Triton kernels for Hopper behind ``SaleConfig(backend="triton")``: one module per stage."""
