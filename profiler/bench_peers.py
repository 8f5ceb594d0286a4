"""The computation pass against the block-sparse kernels a user would pick instead, in the same run.

    python -m profiler bench-peers [--lengths 16384 32768 65536 131072] [--densities 1 .5 .25 .1 .05]
                                   [--grains 128x128 64x32] [--peers flex flex_flash cudnn_bsa]

For each length, grain and density, one block mask and every implementation on it:
- 128x128: causal masks drawn on 128x128 blocks (the first key block and the diagonal always kept, the others
  drawn independently so that the share of causal blocks kept is the density), the grain every peer takes;
  the project's pass runs the same mask expressed in its 64x32 blocks.
- 64x32: SALE's own masks on the structured workload (one threshold for all heads, found by bisection to
  give the density), for the peers that take 64x32 blocks.

Implementations: the project's computation pass (`attend_triton`, its default kernel on this GPU); the peers
that install: FlexAttention (`flex`: torch's Triton backend, compiled; `flex_flash`: its FlashAttention-4
backend, package flash-attn-4) and cuDNN's block-sparse attention (`cudnn_bsa`, package nvidia-cudnn-frontend);
and cuDNN's dense SDPA as the yardstick. (FlashInfer's block-sparse wrappers are not among them: one BSR pattern
serves all heads of a plan, so SALE's per-head masks would take one plan and one launch per head.) Each is
timed on CUDA-graph replay (so host-side work is not timed; plain CUDA events where a peer cannot be
captured), median after warm-up; building a peer's own block format from the mask is timed apart
(`peers_plan_ms`); the project's pass builds its step lists from the kept lists inside every call, and that
part is also timed alone (`project_steps_ms`, included in `project_ms`), and the pass with its step lists built
once for the mask, as the peers' formats are (`project_prebuilt_ms`). Efficiency = density x cuDNN dense ms /
ms. Outputs: the max abs difference of each peer's output from the project's, and of every output from a
float32 reference of the same math on sampled query blocks (`max_abs_err`). cuDNN's block-sparse kernel has no
causal mask inside a block: its reference lets the diagonal blocks see their later keys, and its difference
from the project's output is expected.
A peer that cannot install or run records why (`peers_errors`) and the run goes on.
Records: JSONL, schema `sale-bench-peers/1`. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
import uuid

import torch

import sale
from sale._io import append_line
from sale.blocks import causal_blocks, mask_to_kept, num_blocks

from .baselines import _dense_fns
from .gpu_context import git_commit, nvml_snapshot, software_versions
from .timing import time_cuda

SCHEMA = "sale-bench-peers/1"
PEERS = ("flex", "flex_flash", "cudnn_bsa")
GRAINS = {"128x128": (128, 128), "64x32": (64, 32)}
CHECK_BLOCKS = 6     # query blocks per head (of CHECK_HEADS heads) checked against the float32 reference
CHECK_HEADS = 2


# --- masks -------------------------------------------------------------------------------------------

def grid_causal(n: int, bq: int, bk: int, device=None) -> torch.Tensor:
    """[nqb, nkb] bool: key block c holds a key at or before the last row of query block b."""
    return causal_blocks(n, sale.SaleConfig(block_q=bq, block_k=bk), device)


def random_block_mask(n: int, density: float, batch: int, heads: int, block: int, seed: int,
                      device="cuda") -> torch.Tensor:
    """[B, H, nb, nb] bool on block x block tiles: causal, the first key block and the diagonal kept, the other
    causal blocks drawn independently so that the expected share of causal blocks kept is `density` (the
    always-kept share is a floor)."""
    from .bench_attend import mask_at_density
    # SALE's always-computed blocks on block x block tiles, one sink block and no local window: the first key block
    # and the diagonal
    cfg = sale.SaleConfig(block_q=block, block_k=block, local_window=0, sink_blocks=1)
    return mask_at_density(density, batch, heads, n, cfg, seed, device)


def regrain(mask: torch.Tensor, n: int, grain: tuple[int, int], to: tuple[int, int]) -> torch.Tensor:
    """A block mask on `grain` tiles as the same token set on finer `to` tiles (each divides the other's),
    restricted to causal blocks."""
    (gq, gk), (tq, tk) = grain, to
    if gq % tq or gk % tk:
        raise ValueError(f"grain {grain} is not a multiple of {to}")
    fine = mask.repeat_interleave(gq // tq, -2).repeat_interleave(gk // tk, -1)
    fine = fine[..., :num_blocks(n, tq), :num_blocks(n, tk)]
    return fine & grid_causal(n, tq, tk, mask.device)


def block_lists(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts int32 [..., nq], indices int32 [..., nq, nk]): kept key blocks of each query block in ascending
    order first, then the others (the form every peer reads, with its count)."""
    counts = mask.sum(-1, dtype=torch.int32)
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)
    return counts, order.to(torch.int32)


def full_blocks(n: int, bq: int, bk: int, device=None) -> torch.Tensor:
    """[nqb, nkb] bool: blocks whose every key is at or before the block's first query (no causal cut)."""
    qb = torch.arange(num_blocks(n, bq), device=device)
    kb = torch.arange(num_blocks(n, bk), device=device)
    return (kb[None, :] + 1) * bk - 1 <= qb[:, None] * bq


# --- peers: each returns (run, plan_ms, causal_inside_blocks) or raises why it cannot run --------------

def _causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def flex_block_mask(mask: torch.Tensor, n: int, grain: tuple[int, int]):
    """torch's BlockMask of a causal block mask: the blocks the diagonal cuts get the causal mask_mod, the
    others are full blocks (no mask_mod)."""
    from torch.nn.attention.flex_attention import BlockMask
    full = full_blocks(n, *grain, mask.device)
    partial_counts, partial_idx = block_lists(mask & ~full)
    full_counts, full_idx = block_lists(mask & full)
    return BlockMask.from_kv_blocks(partial_counts, partial_idx, full_counts, full_idx, BLOCK_SIZE=grain,
                                    mask_mod=_causal, seq_lengths=(n, n), compute_q_blocks=False)


_FLEX_COMPILED = {}


def _flex_peer(backend: str):
    def prepare(q, k, v, mask, n, grain):
        from torch.nn.attention.flex_attention import flex_attention
        if "fn" not in _FLEX_COMPILED:
            # one compiled graph per length, grain and backend: more than dynamo's default 8 recompilations, past
            # which flex_attention would fall back to its unfused form (the full score matrix: out of memory)
            from torch import _dynamo
            _dynamo.config.recompile_limit = max(_dynamo.config.recompile_limit, 64)
            _FLEX_COMPILED["fn"] = torch.compile(flex_attention, dynamic=False)
        fn = _FLEX_COMPILED["fn"]
        t0 = time.perf_counter()
        block_mask = flex_block_mask(mask, n, grain)
        torch.cuda.synchronize()
        plan_ms = 1e3 * (time.perf_counter() - t0)
        options = {"BACKEND": backend}
        if backend == "TRITON" and grain != (128, 128):   # its tiles must divide the mask's blocks
            options |= {"BLOCK_M": grain[0], "BLOCK_N": grain[1]}
        run = lambda: fn(q, k, v, block_mask=block_mask, enable_gqa=q.shape[1] != k.shape[1],
                         kernel_options=options)
        return run, plan_ms, True
    return prepare


def _cudnn_bsa(q, k, v, mask, n, grain):
    if grain[0] != grain[1] or grain[0] not in (64, 128):
        raise ValueError(f"takes 64x64 or 128x128 blocks, not {grain[0]}x{grain[1]}")
    from cudnn.block_sparse_attention import block_sparse_attention_forward
    t0 = time.perf_counter()
    counts, idx = block_lists(mask)
    idx = idx.contiguous()
    torch.cuda.synchronize()
    plan_ms = 1e3 * (time.perf_counter() - t0)
    run = lambda: block_sparse_attention_forward(q, k, v, idx, q2k_block_nums=counts, sparse_block_size=grain[0],
                                                 layout="bhsd")["o_tensor"]
    return run, plan_ms, False


PREPARE = {"flex": _flex_peer("TRITON"), "flex_flash": _flex_peer("FLASH"), "cudnn_bsa": _cudnn_bsa}


def peer_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("flash-attn-4", "nvidia-cutlass-dsl", "nvidia-cudnn-frontend"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return out


# --- timing and checks --------------------------------------------------------------------------------

def time_replay(fn, budget_s: float = 1.0) -> tuple[dict, str]:
    """fn() timed as a CUDA-graph replay (host work not timed), or with plain CUDA events where fn cannot be
    captured: (timing, "graph" or "eager: why")."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
        return time_cuda(graph.replay, budget_s=budget_s), "graph"
    except Exception as exc:   # any capture failure: time it eagerly and say why
        torch.cuda.synchronize()
        return time_cuda(fn, budget_s=budget_s), f"eager: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def sampled_reference(q, k, v, mask, n, grain, causal_inside: bool, blocks, scale) -> dict:
    """{(h, qb): float32 [rows, D]}: attention of the sampled query blocks over the keys of their kept blocks
    (causal inside blocks or not)."""
    bq, bk = grain
    group = q.shape[1] // k.shape[1]
    out = {}
    for h, qb in blocks:
        rows = torch.arange(qb * bq, min((qb + 1) * bq, n), device=q.device)
        keys = torch.arange(n, device=q.device)
        allowed = mask[0, h, qb][keys // bk][None, :].expand(len(rows), n)
        if causal_inside:
            allowed = allowed & (keys[None, :] <= rows[:, None])
        s = (q[0, h, rows].float() @ k[0, h // group].float().T) * scale
        p = torch.softmax(s.masked_fill(~allowed, -math.inf), -1)
        out[(h, qb)] = p @ v[0, h // group].float()
    return out


def max_err(out, refs, grain) -> float:
    bq = grain[0]
    return max(float((out[0, h, qb * bq: qb * bq + ref.shape[0]].float() - ref).abs().max()) for (h, qb), ref in refs.items())


# --- the benchmark --------------------------------------------------------------------------------------

def structured_mask(q, k, density, cfg):
    from .bench_attend import structured_mask_at_density
    return structured_mask_at_density(q, k, density, cfg)


def bench_point(q, k, v, mask, n, grain, density, peers, cfg, cudnn_ms, base, out_path, budget_s) -> dict:
    """The project's pass and every peer on one mask (on `grain` tiles): one record, appended to out_path."""
    project_mask = regrain(mask, n, grain, (cfg.block_q, cfg.block_k))
    from sale.triton.attend_kernel import attend_triton, step_lists
    t0 = time.perf_counter()
    kept = mask_to_kept(project_mask)
    torch.cuda.synchronize()
    plan_ms = 1e3 * (time.perf_counter() - t0)
    ours = lambda: attend_triton(q, k, v, project_mask, cfg, kept=kept)
    timing, how = time_replay(ours, budget_s)
    steps = step_lists(q, k, v, kept, cfg)   # built inside every call of ours: timed apart too
    steps_ms = time_replay(steps, budget_s)[0]["median_ms"] if steps else None
    # and ours with its step lists built once for the mask, as the peers' formats are
    prebuilt = steps() if steps else None
    prebuilt_ms = (time_replay(lambda: attend_triton(q, k, v, project_mask, cfg, kept=kept, steps=prebuilt),
                               budget_s)[0]["median_ms"] if steps else None)
    ours_out = ours()
    gen = torch.Generator().manual_seed(n)
    nqb = mask.shape[2]
    blocks = [(h, int(b)) for h in range(min(CHECK_HEADS, q.shape[1]))
              for b in torch.randint(0, nqb, (CHECK_BLOCKS,), generator=gen).tolist()]
    scale = cfg.scale_for(q.shape[3])
    refs = {True: sampled_reference(q, k, v, mask, n, grain, True, blocks, scale)}
    rec = dict(base, seq_len=n, mask_grain=f"{grain[0]}x{grain[1]}", target_density=density,
               density=float(mask.sum() / (grid_causal(n, *grain, mask.device).sum() * mask.shape[0] * mask.shape[1])),
               project_density=float(sale.density(project_mask, n, cfg).mean()),
               project_ms=timing["median_ms"], project_plan_ms=plan_ms, project_timing=how,
               project_steps_ms=steps_ms, project_prebuilt_ms=prebuilt_ms,
               cudnn_ms=cudnn_ms, peers_ms={}, peers_plan_ms={}, peers_timing={}, peers_errors={},
               max_abs_diff={}, max_abs_err={"project": max_err(ours_out, refs[True], grain)},
               time=datetime.datetime.now(datetime.timezone.utc).isoformat())
    for name in peers:
        try:
            run, peer_plan_ms, causal_inside = PREPARE[name](q, k, v, mask, n, grain)
            out = run()
            if causal_inside not in refs:
                refs[causal_inside] = sampled_reference(q, k, v, mask, n, grain, causal_inside, blocks, scale)
            rec["max_abs_err"][name] = max_err(out, refs[causal_inside], grain)
            rec["max_abs_diff"][name] = float((out.float() - ours_out.float()).abs().max())
            out = None
            peer_timing, peer_how = time_replay(run, budget_s)
            rec["peers_ms"][name] = peer_timing["median_ms"]
            rec["peers_plan_ms"][name] = peer_plan_ms
            rec["peers_timing"][name] = peer_how
        except Exception as exc:   # a peer that cannot install or run: why, and the run goes on
            rec["peers_errors"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        torch.cuda.empty_cache()
    eff = lambda ms: rec["density"] * cudnn_ms / ms if cudnn_ms and ms else None
    rec["project_efficiency"] = eff(rec["project_ms"])
    rec["peers_efficiency"] = {p: eff(ms) for p, ms in rec["peers_ms"].items()}
    best = min(rec["peers_ms"].items(), key=lambda x: x[1], default=(None, None))
    rec["best_peer"], rec["best_peer_ms"] = best
    rec["gpu_context"] = nvml_snapshot()
    append_line(out_path, json.dumps(rec))
    return rec


def point_line(rec: dict) -> str:
    peers = "  ".join(f"{p} {ms:7.2f}" for p, ms in rec["peers_ms"].items())
    errors = "  ".join(f"{p}: {why[:60]}" for p, why in rec["peers_errors"].items())
    return (f"N={rec['seq_len']:>6} {rec['mask_grain']:>7} density {rec['density']:.3f}  ours {rec['project_ms']:7.2f} ms "
            f"(eff {rec['project_efficiency'] or 0:.2f})  {peers}  cuDNN dense {rec['cudnn_ms'] or float('nan'):.2f}"
            + (f"  [not run: {errors}]" if errors else ""))


def main(argv=None) -> int:
    from sale._cli import benchmark_preflight, default_out, positive_int
    p = argparse.ArgumentParser(prog="python -m profiler bench-peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[16384, 32768, 65536, 131072])
    p.add_argument("--densities", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1, 0.05])
    p.add_argument("--grains", nargs="+", choices=list(GRAINS), default=list(GRAINS),
                   help="128x128: random causal masks every peer takes; 64x32: SALE's own masks")
    p.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    p.add_argument("--q-heads", type=positive_int, default=32)
    p.add_argument("--kv-heads", type=positive_int, default=8)
    p.add_argument("--head-dim", type=positive_int, default=128)
    p.add_argument("--budget-s", type=float, default=1.0, help="timing budget of each implementation and point")
    p.add_argument("--out", default=default_out("bench_peers.jsonl"))
    args = p.parse_args(argv)
    bad = [d for d in args.densities if not 0 < d <= 1]
    if bad or args.q_heads % args.kv_heads or not args.budget_s > 0:
        print(f"error: --densities must lie in (0, 1], got {bad}" if bad else
              f"error: --budget-s must be > 0, got {args.budget_s}" if not args.budget_s > 0 else
              f"error: --q-heads ({args.q_heads}) must be a multiple of --kv-heads ({args.kv_heads})", file=sys.stderr)
        return 2
    if benchmark_preflight("python -m profiler bench-peers", args.out):
        return 2
    cfg = sale.SaleConfig(backend="triton", check_finite=False)
    base = {"schema": SCHEMA, "run_id": uuid.uuid4().hex[:12], "git_commit": git_commit(),
            "gpu": torch.cuda.get_device_name(), "batch": 1, "num_q_heads": args.q_heads,
            "num_kv_heads": args.kv_heads, "head_dim": args.head_dim, "dtype": "bfloat16",
            "software": software_versions() | peer_versions()}
    from sale.workloads import make_qkv
    records = []
    for n in args.lengths:
        q = k = v = None
        try:
            q, k, v = make_qkv("structured", 1, args.q_heads, args.kv_heads, n, args.head_dim, torch.bfloat16,
                               "cuda", seed=n)
            try:
                cudnn_ms = time_replay(_dense_fns(q, k, v)["sdpa_cudnn"], args.budget_s)[0]["median_ms"]
            except RuntimeError as exc:
                print(f"N={n}: cuDNN dense does not run ({str(exc).splitlines()[0][:100]})")
                cudnn_ms = None
            for grain_name in args.grains:
                grain = GRAINS[grain_name]
                for density in args.densities:
                    try:
                        if grain_name == "64x32":
                            mask, _ = structured_mask(q, k, density, cfg)
                        else:
                            mask = random_block_mask(n, density, 1, args.q_heads, grain[0], seed=int(density * 1000) + n)
                        rec = bench_point(q, k, v, mask, n, grain, density, args.peers, cfg, cudnn_ms, base, args.out,
                                          args.budget_s)
                        records.append(rec)
                        print(point_line(rec), flush=True)
                    except (RuntimeError, ValueError, torch.OutOfMemoryError) as exc:   # recorded, the run goes on
                        rec = dict(base, seq_len=n, mask_grain=grain_name, target_density=density,
                                   error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
                        append_line(args.out, json.dumps(rec))
                        print(f"N={n} {grain_name} density {density}: {rec['error']}", flush=True)
                    mask = None
                    torch.cuda.empty_cache()
        except torch.OutOfMemoryError as exc:
            append_line(args.out, json.dumps(dict(base, seq_len=n, error=f"OOM: {exc}"[:300])))
            print(f"N={n}: OOM")
        q = k = v = None
        torch.cuda.empty_cache()
    print(f"records: {args.out}")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
