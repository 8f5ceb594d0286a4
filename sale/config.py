"""SaleConfig: every knob of the SALE pipeline in one frozen dataclass."""
from __future__ import annotations

import dataclasses
import math

GRANULARITIES = ("per_token", "per_group")
SELECTION_MODES = ("two_pass",)  # "one_pass" (statistics grown from kept blocks) is not built yet
BACKENDS = ("reference", "triton")


@dataclasses.dataclass(frozen=True)
class SaleConfig:
    """Configuration of SALE sparse attention (defaults are the paper's).

    Attributes:
        block_q: query rows per block of the mask. Default 64.
        block_k: keys per block of the mask. Default 32.
        local_window: tokens before a query block's first row whose key blocks are always
            computed (with the blocks up to the diagonal). Default 128.
        sink_blocks: leading key blocks always computed (attention sinks). Default 1.
        granularity: 4-bit quantization scale granularity, ``"per_token"`` (one scale per row of
            q_c and of k_s, the default) or ``"per_group"`` (one scale per ``q_group_size`` query
            rows and per ``k_group_size`` keys).
        q_group_size: query rows sharing a scale with ``granularity="per_group"``. Default 16.
        k_group_size: keys sharing a scale with ``granularity="per_group"``. Default 32.
        estimate_rows: query rows of each query block whose 4-bit estimate decides the block's kept
            key blocks. None (the default) estimates every row: SALE's exact mask. A divisor r of
            block_q estimates every (block_q / r)-th row (rows 0, s, 2s, ... of each block): about
            r / block_q of the estimate's work, and a subset of the exact mask (a block is kept only
            if a sampled row passes). An explicit speed/accuracy trade-off, never the default:
            `python -m profiler bench-select` measures its time, mask recall and output error.
        selection: ``"two_pass"`` (statistics from the sink and local blocks only). The paper's
            ``"one_pass"`` variant is reserved and raises NotImplementedError.
        int8_qk: the computation pass computes q . k from 8-bit integers (the authors' INT8-QK variant,
            SageAttention-style): q quantized per token, k - k_mean per block of 2 * block_k keys,
            symmetric round-half-even to [-127, 127] with one float scale each; p . v stays
            16-bit. About half the tensor-core time of q . k, at a small output error
            (`python -m profiler bench-attend --tiles default split_s2_lp:int8 --qk exact int8` measures both). Default False: exact 16-bit q . k.
        softmax_scale: scale of q.k inside the softmax; None means 1/sqrt(D).
        backend: ``"reference"`` (pure PyTorch, any device) or ``"triton"`` (CUDA Hopper kernels;
            also runs in the Triton interpreter with TRITON_INTERPRET=1).
        check_finite: reject NaN/Inf in q, k, v (one reduction and a host sync per tensor).
            Benchmarks turn it off so that timings hold kernels only.
        attend_tile: the triton backend's computation-pass form, a name of
            ``sale.triton.attend_kernel.ATTEND_CONFIGS`` (e.g. ``"default"``, the Triton split form, faster
            on Hopper at 16K for densities <= 0.1). None: the default for the GPU (on
            Hopper the Gluon union ring with halved "only" steps on a persistent grid, ``"gluon_split_p"``). The
            reference backend ignores it.
    """

    block_q: int = 64
    block_k: int = 32
    local_window: int = 128
    sink_blocks: int = 1
    granularity: str = "per_token"
    q_group_size: int = 16
    k_group_size: int = 32
    estimate_rows: int | None = None
    selection: str = "two_pass"
    int8_qk: bool = False
    softmax_scale: float | None = None
    backend: str = "reference"
    check_finite: bool = True
    attend_tile: str | None = None

    def __post_init__(self):
        if not isinstance(self.check_finite, bool):
            raise ValueError(f"SaleConfig.check_finite must be True or False, got {self.check_finite!r}")
        for name in ("block_q", "block_k", "q_group_size", "k_group_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SaleConfig.{name} must be a positive int, got {value!r}")
        for name in ("local_window", "sink_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SaleConfig.{name} must be a non-negative int, got {value!r}")
        r = self.estimate_rows
        if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < 1 or self.block_q % r):
            raise ValueError(f"SaleConfig.estimate_rows must be None or a positive divisor of block_q="
                             f"{self.block_q}, got {r!r}")
        if not isinstance(self.int8_qk, bool):
            raise ValueError(f"SaleConfig.int8_qk must be a bool, got {self.int8_qk!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"SaleConfig.granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.selection == "one_pass":
            raise NotImplementedError("SaleConfig.selection='one_pass' is not implemented yet; use 'two_pass'")
        if self.selection not in SELECTION_MODES:
            raise ValueError(f"SaleConfig.selection must be one of {SELECTION_MODES}, got {self.selection!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"SaleConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "triton":   # the Triton kernels' tiles: limits known now, not at the first launch
            for name in ("block_q", "block_k"):
                value = getattr(self, name)
                if value & (value - 1) or value < 16:
                    raise ValueError(f"SaleConfig.{name} must be a power of two >= 16 for the triton backend, "
                                     f"got {value}")
        if self.attend_tile is not None and (not isinstance(self.attend_tile, str) or not self.attend_tile):
            raise ValueError(f"SaleConfig.attend_tile must be None or a tile name (a str), got {self.attend_tile!r}")
        if self.softmax_scale is not None:
            s = self.softmax_scale
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
                raise ValueError(f"SaleConfig.softmax_scale must be a positive finite float or None, got {s!r}")

    def scale_for(self, head_dim: int) -> float:
        """The softmax scale used for head dimension ``head_dim``."""
        return float(self.softmax_scale) if self.softmax_scale is not None else 1.0 / math.sqrt(head_dim)

    @property
    def estimate_row_stride(self) -> int:
        """Distance between the query rows whose estimate is computed (1: every row, the exact mask)."""
        return 1 if self.estimate_rows is None else self.block_q // self.estimate_rows

    def replace(self, **changes) -> "SaleConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
