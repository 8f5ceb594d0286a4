"""Per-head threshold calibration (docs/algorithm.md, "Thresholds"), on any Q/K/V a caller captures.

The authors' procedure ("halving"): start at tau = 0.008; run SALE for the head and compare with dense
attention; error = sum over the head's [N, D] output of |O_sale - O_dense|; while error >= theta * N
halve tau; once tau <= 1e-4 the head is dense (tau = 0). "bisection" reaches the same target with a
finer answer: the largest tau in [1e-4, tau_max] (bisection in log tau) whose error stays below
theta * N. Both estimate the head once (``block_log_scores``) and derive the mask of every tried tau
from it, so each step costs one block-sparse attention.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math

import torch

from ._io import atomic_write_bytes
from .blocks import always_computed_blocks
from .config import SaleConfig
from .dense import dense_attention
from .metrics import density
from .attend import _attend
from .select import block_log_scores

METHODS = ("halving", "bisection")
TAU_START = 0.008
TAU_FLOOR = 1e-4


@dataclasses.dataclass
class HeadCalibration:
    """Result for one head: the threshold, its error (sum |O_sale - O_dense| / N), density, steps."""

    threshold: float
    error_per_token: float
    density: float
    evaluations: int


def _mask_at(scores: torch.Tensor, always: torch.Tensor, tau: float) -> torch.Tensor:
    if tau == 0:
        return torch.ones_like(scores, dtype=torch.bool)
    return (scores > math.log(tau)) | always


def calibrate_head(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, theta: float, method: str = "halving",
                   config: SaleConfig | None = None, tau_max: float = 0.1, steps: int = 12) -> HeadCalibration:
    """Calibrate one head: q [B, 1, N, D], k and v [B, 1, N, D] (any float dtype; math in float32)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"calibrate_head takes one head: {name} must have shape [B, 1, N, D], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (isinstance(theta, (int, float)) and math.isfinite(theta) and theta > 0):
        raise ValueError(f"theta must be a positive finite float, got {theta!r}")
    config = config or SaleConfig()
    n = q.shape[2]
    scores = block_log_scores(q, k, config.replace(backend="reference"))[0, 0]
    always = always_computed_blocks(n, config, q.device)
    dense = dense_attention(q, k, v, config.softmax_scale).float()
    evaluations = 0

    def error(tau: float) -> tuple[float, float]:
        nonlocal evaluations
        evaluations += 1
        mask = _mask_at(scores, always, tau).expand(q.shape[0], 1, -1, -1).contiguous()
        out = _attend(q, k, v, mask, config).float()  # the configured backend (triton on a GPU)
        return float((out - dense).abs().sum() / n / q.shape[0]), float(density(mask, n, config).mean())

    if method == "halving":
        tau = TAU_START
        while True:
            err, dens = error(tau)
            if err < theta:
                return HeadCalibration(tau, err, dens, evaluations)
            tau /= 2
            if tau <= TAU_FLOOR:
                err, dens = error(0.0)
                return HeadCalibration(0.0, err, dens, evaluations)
    lo, hi = math.log(TAU_FLOOR), math.log(tau_max)
    err_hi, dens_hi = error(tau_max)
    if err_hi < theta:
        return HeadCalibration(tau_max, err_hi, dens_hi, evaluations)
    err_lo, dens_lo = error(TAU_FLOOR)
    if err_lo >= theta:
        err, dens = error(0.0)
        return HeadCalibration(0.0, err, dens, evaluations)
    best = (TAU_FLOOR, err_lo, dens_lo)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        err, dens = error(math.exp(mid))
        if err < theta:
            lo, best = mid, (math.exp(mid), err, dens)
        else:
            hi = mid
    return HeadCalibration(best[0], best[1], best[2], evaluations)


def calibrate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, theta: float, method: str = "halving",
              config: SaleConfig | None = None, progress=None) -> list[HeadCalibration]:
    """One HeadCalibration per query head of q [B, Hq, N, D] (k, v [B, Hkv, N, D], GQA)."""
    if k.shape[1] < 1 or q.shape[1] % k.shape[1]:
        raise ValueError(f"the number of query heads (q.shape[1]={q.shape[1]}) must be a multiple of the number of "
                         f"kv heads (k.shape[1]={k.shape[1]})")
    group = q.shape[1] // k.shape[1]
    results = []
    for h in range(q.shape[1]):
        kv = h // group
        results.append(calibrate_head(q[:, h:h + 1], k[:, kv:kv + 1], v[:, kv:kv + 1], theta, method, config))
        if progress is not None:
            progress(h)
    return results


def write_thresholds(path: str, per_layer: list[list[HeadCalibration]], *, model: str, theta: float, method: str,
                     prompts: list[str], extra: dict | None = None) -> None:
    """Write a thresholds file (JSON, schema sale-thresholds/1) atomically."""
    doc = {
        "schema": "sale-thresholds/1", "model": model, "theta": theta, "method": method, "prompts": prompts,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "thresholds": [[c.threshold for c in layer] for layer in per_layer],
        "error_per_token": [[c.error_per_token for c in layer] for layer in per_layer],
        "density": [[c.density for c in layer] for layer in per_layer],
        "evaluations": [[c.evaluations for c in layer] for layer in per_layer],
        **(extra or {}),
    }
    atomic_write_bytes(path, json.dumps(doc, indent=1).encode())


THRESHOLDS_SCHEMA = "sale-thresholds/1"


def read_thresholds_file(path: str, num_layers: int | None = None, num_heads: int | None = None) -> dict:
    """A thresholds file (``write_thresholds``), checked whole before anything uses it: its JSON, schema,
    ``theta`` and ``method``, and ``thresholds`` as [layers][heads] of numbers >= 0 (no NaN, no booleans, no
    strings), every layer with the same head count; with num_layers / num_heads, those counts too (a model's).
    Every error names the file and the entry. Returns the document."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"thresholds file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"thresholds file {path!r} is a folder") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a thresholds file holds a JSON object, got {type(doc).__name__}")
    if doc.get("schema") != THRESHOLDS_SCHEMA:
        raise ValueError(f"{path}: schema must be {THRESHOLDS_SCHEMA!r}, got {doc.get('schema')!r}")
    theta = doc.get("theta")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
        raise ValueError(f"{path}: 'theta' must be a number > 0, got {theta!r}")
    if not isinstance(doc.get("method"), str):
        raise ValueError(f"{path}: 'method' must be a string, got {doc.get('method')!r}")
    layers = doc.get("thresholds")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: 'thresholds' must be a non-empty list of layers, got {layers!r:.80}")
    heads = None
    for i, layer in enumerate(layers):
        if not isinstance(layer, list) or not layer:
            raise ValueError(f"{path}: thresholds[{i}] must be a non-empty list of per-head thresholds, "
                             f"got {layer!r:.80}")
        if heads is None:
            heads = len(layer)
        elif len(layer) != heads:
            raise ValueError(f"{path}: thresholds[{i}] has {len(layer)} heads, thresholds[0] has {heads}")
        for h, tau in enumerate(layer):
            if isinstance(tau, bool) or not isinstance(tau, (int, float)) or math.isnan(tau) or tau < 0:
                raise ValueError(f"{path}: thresholds[{i}][{h}] must be a number >= 0, got {tau!r}")
    if num_layers is not None and len(layers) != num_layers:
        raise ValueError(f"{path}: holds thresholds for {len(layers)} layers, the model has {num_layers}")
    if num_heads is not None and heads != num_heads:
        raise ValueError(f"{path}: holds {heads} thresholds per layer, the model has {num_heads} query heads")
    return doc


def load_thresholds(path: str, layer: int = 0) -> list[float]:
    """The per-head thresholds of `layer` from a thresholds file (checked whole), ready for ``sale_attention``."""
    layers = read_thresholds_file(path)["thresholds"]
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(layers):
        raise ValueError(f"layer must be an int in [0, {len(layers)}) for {path}, got {layer!r}")
    return [float(t) for t in layers[layer]]
