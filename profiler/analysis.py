"""Comparisons across sweep points that need no GPU and no torch (the dashboard imports this too).

    python -m profiler matched-error traces/h100_sweep_estimate_rows_a.jsonl traces/h100_sweep_estimate_rows_b.jsonl

`speedup_at_matched_error`: for each length and each threshold of the exact estimate, the end-to-end
speedup each estimate option reaches at the same output error (relative L1 against dense), read off
the option's own threshold curve by interpolation in log error (never extrapolated). Options that
estimate fewer rows keep fewer blocks at a given threshold, so comparing them at equal threshold
says nothing; at equal error it says which one to run.
"""
from __future__ import annotations

import math
import sys
from collections import defaultdict


EXACT = (64, 0)  # SALE's defaults: 64-row mask blocks, every query row estimated


def option_of(point: dict) -> tuple[int, int]:
    """The configuration a sweep point ran, as (block_q, estimate_rows or 0); old traces lack both."""
    return (point.get("block_q") or 64, point.get("estimate_rows") or 0)


def option_label(option: tuple[int, int]) -> str:
    block_q, rows = option
    parts = ([f"block_q={block_q}"] if block_q != 64 else []) + ([f"estimate_rows={rows}"] if rows else [])
    return ", ".join(parts) or "exact estimate"


def _interp(x: float, xs: list[float], ys: list[float]) -> float | None:
    """Piecewise-linear interpolation at x of ascending xs, or None outside [xs[0], xs[-1]]."""
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (x - x0) / (x1 - x0) * (y1 - y0)
    return ys[0]  # a single point equal to x


def speedup_at_matched_error(points: list[dict]) -> list[dict]:
    """Rows {seq_len, threshold, rel_l1, density, speedup (SALE's defaults: 64-row blocks, exact estimate),
    and per other configuration (option_label: estimate_rows, block_q) its speedup at that error or None}.
    Curves are per (length, configuration); where several runs measured the same (length, configuration,
    threshold), the latest point counts."""
    ok = [p for p in points if p.get("error") is None and p.get("rel_l1") and p.get("speedup")]
    curves = defaultdict(dict)  # (seq_len, option) -> {threshold: point}
    for p in sorted(ok, key=lambda p: p["time"]):
        curves[(p["seq_len"], option_of(p))][p["threshold"]] = p
    options = sorted({opt for _, opt in curves if opt != EXACT}, key=lambda o: (o[0], -o[1] if o[1] else -10**6))
    rows = []
    for (n, opt), exact in sorted((k, v) for k, v in curves.items() if k[1] == EXACT):
        for tau, e in sorted(exact.items()):
            row = {"seq_len": n, "threshold": tau, "rel_l1": e["rel_l1"], "density": e["density"],
                   "speedup": e["speedup"]}
            for o in options:
                pts = sorted(curves.get((n, o), {}).values(), key=lambda p: p["rel_l1"])
                xs = [math.log(p["rel_l1"]) for p in pts]
                row[option_label(o)] = _interp(math.log(e["rel_l1"]), xs, [p["speedup"] for p in pts])
            rows.append(row)
    return rows


def main(argv=None) -> int:
    from . import trace
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__)
        return 2
    points = []
    for path in paths:
        records, problems = trace.read(path)
        for why in problems:
            print(f"skipped {why}", file=sys.stderr)
        points += [r for r in records if r["kind"] == "point"]
    rows = speedup_at_matched_error(points)
    if not rows:
        print("no exact-estimate points with an error measure in these traces")
        return 1
    options = [k for k in rows[0] if k not in ("seq_len", "threshold", "rel_l1", "density", "speedup")]
    print("speedup over the fastest dense attention at the exact estimate's output error (rel. L1 vs dense)")
    print(f"{'N':>7} {'tau':>6} {'rel.L1':>7} {'exact':>6} " + " ".join(f"{o:>30}" for o in options))
    for r in rows:
        print(f"{r['seq_len']:>7} {r['threshold']:>6g} {r['rel_l1']:7.4f} {r['speedup']:5.2f}x " + " ".join(
            f"{'-' if r[o] is None else format(r[o], '.2f') + 'x':>30}" for o in options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
