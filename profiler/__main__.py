"""python -m profiler {sweep, suite, bench-select, bench-attend, capture-torch, capture-maps, estimate-tradeoff, matched-error, sass-loop, nsys-breakdown, bench-methods, bench-peers}"""
from __future__ import annotations

import argparse
import sys

import torch


def _sweep(args) -> int:
    import itertools

    from sale._cli import check_device, check_out_path
    try:
        devices = None
        if args.gpus is not None:
            from .sweep_gpus import parse_gpus
            devices = [f"cuda:{i}" for i in parse_gpus(args.gpus, torch.cuda.device_count())]
            if args.device:
                raise ValueError("--gpus and --device exclude each other")
            args.device = devices[0]
        device = check_device(args.device, args.backend)
        check_out_path(args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backend = args.backend or ("triton" if device.startswith("cuda") else "reference")
    import sale

    from .sweep import sweep
    for rows, block_q in itertools.product(args.estimate_rows, args.block_q):
        try:  # a bad pair fails here, with SaleConfig's message, before any point runs
            sale.SaleConfig(estimate_rows=rows, block_q=block_q)
        except ValueError as exc:
            print(f"error: --estimate-rows {rows} with --block-q {block_q}: {exc}", file=sys.stderr)
            return 2
    combos = list(itertools.product(args.workload, args.batch, args.q_heads, args.kv_heads, args.head_dim, args.dtype,
                                    args.granularity, args.estimate_rows, args.block_q))
    records = []
    for workload, batch, hq, hkv, d, dtype, granularity, estimate_rows, block_q in combos:
        if len(combos) > 1:
            print(f"-- workload={workload} B={batch} Hq={hq} Hkv={hkv} D={d} {dtype} {granularity} "
                  f"estimate_rows={estimate_rows or 'all'} block_q={block_q}")
        if hq % hkv:
            print(f"   skipped: {hq} query heads are not a multiple of {hkv} kv heads")
            continue
        kwargs = dict(backend=backend, workload=workload, batch=batch, num_q_heads=hq, num_kv_heads=hkv, head_dim=d,
                      dtype=dtype, granularity=granularity, estimate_rows=estimate_rows, block_q=block_q, reps=args.reps,
                      warmup=args.warmup, accuracy_max_len=args.accuracy_max_len, seed=args.seed)
        if devices:   # one worker process per GPU, the lengths dealt over them
            from .sweep_gpus import sweep_on_devices
            records += sweep_on_devices(devices, args.lengths, args.thresholds, out_path=args.out, **kwargs)
        else:
            records += sweep(args.lengths, args.thresholds, device=device, out_path=args.out,
                             progress=not args.no_progress, **kwargs)
    points = [r for r in records if r["kind"] == "point"]
    print(f"{'N':>7} {'tau':>7} {'rows':>4} {'quant':>8} {'select':>8} {'attend':>8} {'dense':>9} {'backend':>13} "
          f"{'density':>7} {'ovh%':>6} {'speedup':>7} {'rel.L1':>7} {'recall':>7}")
    for r in points:
        if r["error"]:
            print(f"{r['seq_len']:>7} {r['threshold']:>7} {r.get('estimate_rows') or 'all':>4} failed: {r['error']}")
            continue
        fmt = lambda x, spec: "-" if x is None else format(x, spec)
        print(f"{r['seq_len']:>7} {r['threshold']:>7} {r.get('estimate_rows') or 'all':>4} {r['quantize_ms']:8.2f} {r['select_ms']:8.2f} {r['attend_ms']:8.2f} "
              f"{fmt(r['dense_ms'], '9.2f')} {str(r['dense_backend']):>13} {r['density']:7.3f} "
              f"{fmt(r['overhead_pct'], '6.1f')} {fmt(r['speedup'], '7.2f')} {fmt(r['rel_l1'], '7.4f')} "
              f"{fmt(r['recall_mean'], '7.4f')}")
    for summary in (r for r in records if r["kind"] == "summary"):
        print(f"break-even length per threshold ({summary['num_q_heads']}x{summary['head_dim']} {summary['dtype']}, "
              f"{summary['workload']}, estimate_rows={summary.get('estimate_rows') or 'all'}): {summary['break_even']}")
    print(f"trace: {args.out}")
    if points and all(r["error"] for r in points):
        print("error: every point failed", file=sys.stderr)
        return 1
    if not points:
        print("error: no point ran", file=sys.stderr)
        return 1
    return 0


def _estimate_rows(text: str):
    """--estimate-rows: 'all' (the exact estimate) or a positive int."""
    from sale._cli import positive_int
    return None if text == "all" else positive_int(text)


MODULE_COMMANDS = [  # (subcommand, module under profiler/, help)
    ("bench-select", "bench_select", "the selection benchmark in profiler/bench_select.py"),
    ("bench-attend", "bench_attend", "the computation-pass benchmark in profiler/bench_attend.py"),
    ("capture-torch", "capture_torch", "one point under torch.profiler: Chrome trace + per-stage breakdown"),
    ("capture-maps", "capture_maps", "block-level attention maps of a few heads for the dashboard"),
    ("estimate-tradeoff", "estimate_tradeoff", "accuracy of SaleConfig.estimate_rows against the exact estimate"),
    ("matched-error", "analysis", "speedup of each configuration at the exact estimate's error"),
    ("sass-loop", "sass_loop", "a kernel's hot loop on sm_90 (registers, opcode histogram), no GPU needed"),
    ("nsys-breakdown", "nsys_parse", "per-stage kernel time from an nsys SQLite export"),
    ("suite", "suite", "the presets of commands that reproduce the committed traces (--list)"),
    ("bench-methods", "bench_methods", "SALE against other block-selection methods on the same computation pass"),
    ("bench-peers", "bench_peers", "the computation pass against FlexAttention, FlashAttention-4 and cuDNN block-sparse"),
]


def main(argv=None) -> int:
    from sale._cli import default_out, nonnegative_int, positive_int, threshold
    parser = argparse.ArgumentParser(prog="python -m profiler", description="Profile SALE against dense attention.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="sequence lengths x thresholds -> trace records (see profiler/sweep.py)")
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--thresholds", type=threshold, nargs="+", default=[0.001, 0.003, 0.01, 0.03])
    # every option below takes one or more values; the sweep covers their product
    p.add_argument("--workload", nargs="+", default=["structured"], choices=["structured", "uniform"])
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1])
    p.add_argument("--q-heads", type=positive_int, nargs="+", default=[8])
    p.add_argument("--kv-heads", type=positive_int, nargs="+", default=[2])
    p.add_argument("--head-dim", type=positive_int, nargs="+", default=[64])
    p.add_argument("--dtype", nargs="+", default=None, choices=["bf16", "fp16", "fp32"],
                   help="default bf16 on a GPU, fp32 on the CPU")
    p.add_argument("--granularity", nargs="+", default=["per_token"], choices=["per_token", "per_group"])
    p.add_argument("--estimate-rows", nargs="+", default=[None], type=_estimate_rows,
                   help="'all' (SALE's exact estimate, the default) or r: SaleConfig(estimate_rows=r), every "
                        "(block_q/r)-th query row estimated (less work, a subset of the exact mask)")
    p.add_argument("--block-q", type=positive_int, nargs="+", default=[64], help="query rows per mask block (SALE: 64)")
    p.add_argument("--reps", type=positive_int, default=3)
    p.add_argument("--warmup", type=nonnegative_int, default=1)
    p.add_argument("--accuracy-max-len", type=nonnegative_int, default=16384,
                   help="longest N measured against the float32 reference (with recall); longer N are "
                        "compared with the fastest dense kernel's output")
    p.add_argument("--device", default=None)
    p.add_argument("--gpus", default=None, help="'all' or GPU indices (0,1,...): the lengths dealt over one worker "
                   "process per GPU, all writing to --out")
    p.add_argument("--backend", default=None, choices=["reference", "triton"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=default_out("sweep.jsonl"), help="default runs/sweep.jsonl (git-ignored)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_sweep)
    # Subcommands that hand their arguments to a module's own main(argv).
    for name, module, what in MODULE_COMMANDS:
        sub.add_parser(name, help=what, add_help=False).set_defaults(func=None, module=module)
    args, rest = parser.parse_known_args(argv)
    if args.func is None:
        import importlib
        result = importlib.import_module(f"profiler.{args.module}").main(rest)
        if isinstance(result, int):
            return result
        if isinstance(result, list) and result and all(isinstance(r, dict) and "error" in r for r in result):
            print("error: no point ran", file=sys.stderr)
            return 1
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.dtype is None:
        args.dtype = ["bf16" if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cpu" else "fp32"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
