"""LLM-like synthetic Q, K, V for profiling SALE.

Random Gaussian Q and K give near-uniform attention in which SALE has nothing to skip. The
"structured" workload instead builds each head from the patterns real LLM heads show, each with a
strength given in logits (units of scale * q.k, i.e. after the softmax scale):

- attention sinks: the first ``sink_tokens`` keys share a direction with every query;
- local decay: a rotary (RoPE) component common to q and k; its energy sits in the fast-rotating
  frequency pairs, so q_i . k_j decays with |i - j| as it does under rotary embeddings;
- vertical keys: ``num_vertical`` random keys per kv head that every query attends to;
- slash diagonals: queries carry the rotary component of position i - offset, so row i also peaks
  at key i - offset, for each offset in ``slash_offsets``;
- retrieval needles: ``num_needles`` spans of ``needle_len`` keys matched by a span of ``needle_len``
  queries near the end of the sequence (a question looking up a fact);
- isotropic noise of ``noise_logit`` logits standard deviation.

``concentration`` multiplies every structured strength (higher: sparser attention). Each query
head of a GQA group varies its strengths by a random factor in [0.5, 1.5]. Generation is O(N x D)
per head (no N x N tensor), so 128K tokens fit on a GPU. Results are seeded: the same seed, device
and arguments give the same tensors.
"""
from __future__ import annotations

import dataclasses
import math

import torch

WORKLOADS = ("structured", "uniform")


@dataclasses.dataclass(frozen=True)
class StructuredParams:
    """Knobs of the structured workload (strengths in logits; see the module docstring)."""

    sink_tokens: int = 4
    sink_logit: float = 12.0
    local_logit: float = 9.0
    local_spread: float = 0.15      # share of the frequency pairs holding most local energy
    num_vertical: int = 8
    vertical_logit: float = 7.5
    slash_offsets: tuple[int, ...] = (512, 2048)
    slash_logit: float = 6.0
    num_needles: int = 2
    needle_len: int = 16
    needle_logit: float = 10.5
    noise_logit: float = 0.25
    concentration: float = 1.0
    rope_base: float = 500000.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "slash_offsets":
                if any((not isinstance(o, int)) or o < 1 for o in value):
                    raise ValueError(f"StructuredParams.slash_offsets must be positive ints, got {value!r}")
            elif isinstance(value, float) and (not math.isfinite(value) or value < 0):
                raise ValueError(f"StructuredParams.{f.name} must be finite and >= 0, got {value!r}")
            elif isinstance(value, int) and value < 0:
                raise ValueError(f"StructuredParams.{f.name} must be >= 0, got {value!r}")
        if self.rope_base <= 1:
            raise ValueError(f"StructuredParams.rope_base must be > 1, got {self.rope_base}")


def _rotary(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Rotate the constant vector x [D] to each position [N] (half-split RoPE): [N, D] float32."""
    half = x.shape[0] // 2
    theta = base ** (-torch.arange(half, dtype=torch.float64, device=x.device) * 2 / x.shape[0])
    angle = positions.to(torch.float64)[:, None] * theta[None, :]
    cos, sin = torch.cos(angle).float(), torch.sin(angle).float()
    x1, x2 = x[:half].float(), x[half:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _local_direction(head_dim: int, spread: float, gen: torch.Generator) -> torch.Tensor:
    """Unit vector whose energy decays over the rotary frequency pairs (fast pairs first)."""
    half = head_dim // 2
    weights = torch.exp(-torch.arange(half, dtype=torch.float32) / max(spread * half, 1e-3))
    weights = weights / weights.sum()
    angle = torch.rand(half, generator=gen) * 2 * math.pi
    return torch.cat([weights.sqrt() * torch.cos(angle), weights.sqrt() * torch.sin(angle)])


def _orthonormal(count: int, head_dim: int, gen: torch.Generator) -> torch.Tensor:
    """`count` orthonormal directions [count, D] (count <= D)."""
    basis, _ = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=gen))
    return basis[:, :count].T.contiguous()


def make_qkv(workload: str = "structured", batch: int = 1, num_q_heads: int = 32, num_kv_heads: int = 8,
             seq_len: int = 4096, head_dim: int = 128, dtype: torch.dtype = torch.bfloat16,
             device="cpu", seed: int = 0, params: StructuredParams | None = None):
    """Synthetic attention inputs.

    Args:
        workload: "structured" (LLM-like, see the module docstring) or "uniform" (i.i.d. Gaussian
            q, k, v: the control in which attention is near-uniform).
        batch, num_q_heads, num_kv_heads, seq_len, head_dim: shapes; num_q_heads a multiple of
            num_kv_heads; head_dim even.
        dtype: dtype of the returned tensors (default bfloat16).
        device: where the tensors are built.
        seed: seeds every random draw.
        params: StructuredParams for "structured" (default StructuredParams()).

    Returns:
        (q [B, Hq, N, D], k [B, Hkv, N, D], v [B, Hkv, N, D]) in ``dtype`` on ``device``.
    """
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    for name, value in (("batch", batch), ("num_q_heads", num_q_heads), ("num_kv_heads", num_kv_heads),
                        ("seq_len", seq_len), ("head_dim", head_dim)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if num_q_heads % num_kv_heads:
        raise ValueError(f"num_q_heads ({num_q_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    if head_dim % 2:
        raise ValueError(f"head_dim must be even (rotary pairs), got {head_dim}")
    params = params or StructuredParams()
    device = torch.device(device)
    gen_dev = torch.Generator(device=device).manual_seed(seed)
    q = torch.empty(batch, num_q_heads, seq_len, head_dim, dtype=dtype, device=device)
    k = torch.empty(batch, num_kv_heads, seq_len, head_dim, dtype=dtype, device=device)
    v = torch.randn(batch, num_kv_heads, seq_len, head_dim, generator=gen_dev, device=device).to(dtype)
    if workload == "uniform":
        q.copy_(torch.randn(q.shape, generator=gen_dev, device=device))
        k.copy_(torch.randn(k.shape, generator=gen_dev, device=device))
        return q, k, v
    gen = torch.Generator().manual_seed(seed)  # small draws (directions, positions) on the CPU
    group = num_q_heads // num_kv_heads
    for b in range(batch):
        for g in range(num_kv_heads):
            kv_q_parts, k[b, g] = _structured_head(params, seq_len, head_dim, group, gen, gen_dev, device)
            for j, q_head in enumerate(kv_q_parts):
                q[b, g * group + j] = q_head
    return q, k, v


def _structured_head(p: StructuredParams, n: int, d: int, group: int, gen, gen_dev, device):
    """One kv head's k [N, D] and its `group` query heads [N, D] each (float32)."""
    pos = torch.arange(n, device=device)
    sqrt_d = math.sqrt(d)
    amp = lambda logit: math.sqrt(max(logit, 0.0) * p.concentration * sqrt_d)  # a_q = a_k, a_q a_k / sqrt(D) = logit
    dirs = _orthonormal(2 + p.num_needles, d, gen).to(device)  # sink, vertical, needles
    sink_dir, vert_dir, needle_dirs = dirs[0], dirs[1], dirs[2:]
    u = _local_direction(d, p.local_spread, gen).to(device)
    local_k = _rotary(u, pos, p.rope_base)

    noise = math.sqrt(p.noise_logit)
    k = noise * torch.randn(n, d, generator=gen_dev, device=device) + amp(p.local_logit) * local_k
    k[: min(p.sink_tokens, n)] += amp(p.sink_logit) * sink_dir
    vertical = torch.randint(0, n, (min(p.num_vertical, n),), generator=gen).to(device)
    k[vertical] += amp(p.vertical_logit) * vert_dir
    needles = []
    question_start = max(0, n - p.needle_len)
    for m in range(p.num_needles):
        if question_start <= p.needle_len:
            break
        start = int(torch.randint(0, question_start - p.needle_len, (1,), generator=gen))
        k[start:start + p.needle_len] += amp(p.needle_logit) * needle_dirs[m]
        needles.append(needle_dirs[m])

    heads = []
    for _ in range(group):
        s = (0.5 + torch.rand(5, generator=gen)).tolist()  # per-head strengths
        qh = noise * torch.randn(n, d, generator=gen_dev, device=device)
        qh += s[0] * amp(p.local_logit) * local_k
        qh += s[1] * amp(p.sink_logit) * sink_dir
        qh += s[2] * amp(p.vertical_logit) * vert_dir
        for offset in p.slash_offsets:
            if offset < n:
                qh += s[3] * amp(p.slash_logit) * _rotary(u, pos - offset, p.rope_base)
        for direction in needles:
            qh[question_start:] += s[4] * amp(p.needle_logit) * direction
        heads.append(qh)
    return heads, k
