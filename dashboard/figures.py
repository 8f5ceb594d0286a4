"""Figure builders: plain functions from trace records to Plotly figures (tested without Streamlit)."""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import plotly.graph_objects as go

from profiler.analysis import EXACT, option_label, option_of, speedup_at_matched_error  # pure Python, no torch

SALE_BUDGET_PCT = 11.0
# The authors' quantization + selection share of dense time (RTX 4090, INT4, vs FlashAttention-2),
# The SALE paper's headline numbers (RTX 4090, against FlashAttention-2): targets, not measurements of ours.
AUTHORS_OVERHEAD = {8192: 23.9, 16384: 16.7, 32768: 13.3, 65536: 11.5, 131072: 11.1}
STAGE_COLORS = {"quantize": "#4c78a8", "select": "#f58518", "attend": "#54a24b"}


def _ok(points):
    return [p for p in points if p.get("error") is None and p.get("sale_ms") is not None]


def _by_series(points):
    """{label: points sorted by length}, one series per (threshold, configuration: estimate_rows,
    block_q). Where several runs measured the same length of a series, the latest point counts (the
    Runs page compares runs)."""
    groups = defaultdict(list)
    for p in _ok(points):
        groups[(option_of(p), p["threshold"])].append(p)
    return {f"tau={tau:g}" + ("" if opt == EXACT else f", {option_label(opt)}"): _latest_per_length(ps)
            for (opt, tau), ps in sorted(groups.items())}


def _by_option(points):
    """{configuration (block_q, estimate_rows or 0): points sorted by length}, the latest point per length."""
    groups = defaultdict(list)
    for p in _ok(points):
        groups[option_of(p)].append(p)
    return {opt: _latest_per_length(ps) for opt, ps in sorted(groups.items())}


def _latest_per_length(records) -> list[dict]:
    """The latest record (by time) of each sequence length, sorted by length: one point per length when
    several benchmark runs are in the folder."""
    latest = {}
    for r in sorted(records, key=lambda r: r.get("time") or ""):
        latest[r["seq_len"]] = r
    return [latest[n] for n in sorted(latest)]


def _length_axis(fig, title="sequence length (tokens)"):
    fig.update_xaxes(type="log", title=title, tickformat="~s")
    return fig


def overhead_figure(points, bench_select=(), options=None) -> go.Figure:
    """Estimation overhead (quantize + select, % of the fastest dense attention) by length, one line per
    estimate option (the estimate's cost does not depend on the threshold: each point is the median over
    the thresholds of the latest run at that length), against SALE's ~11% budget and the authors' RTX
    4090 figures. `options`: the configurations (block_q, estimate_rows or 0) whose kernel-benchmark
    lines to draw (default: all)."""
    fig = go.Figure()
    for opt, ps in _by_option(points).items():
        med = []
        for p in ps:
            same = [q["overhead_pct"] for q in _ok(points) if q["run_id"] == p["run_id"] and q["seq_len"] == p["seq_len"]
                    and option_of(q) == opt]
            med.append(float(np.median(same)))
        fig.add_trace(go.Scatter(x=[p["seq_len"] for p in ps], y=med, mode="lines+markers",
                                 name=f"sweep, {option_label(opt)}",
                                 customdata=[[p["dense_backend"], p["gpu"], p["run_id"]] for p in ps],
                                 hovertemplate="N=%{x}<br>%{y:.1f}% of %{customdata[0]}<br>%{customdata[1]}"
                                               "<br>run %{customdata[2]}"))
    for block_q in sorted({r.get("block_q") or 64 for r in bench_select}):
        mine = [r for r in bench_select if (r.get("block_q") or 64) == block_q]
        suffix = "" if block_q == 64 else f", block_q={block_q}"
        bench = _latest_per_length(r for r in mine if r.get("estimate_pct_of_dense") is not None)
        if not bench:
            continue
        if options is None or (block_q, 0) in options:
            fig.add_trace(go.Scatter(x=[r["seq_len"] for r in bench], y=[r["estimate_pct_of_dense"] for r in bench],
                                     mode="lines+markers", name=f"kernel benchmark (best tile){suffix}",
                                     line=dict(dash="dot")))
        with_rows = _latest_per_length(r for r in mine if r.get("estimate_rows"))
        for rows in sorted({r for b in with_rows for r in b["estimate_rows"]}, key=int, reverse=True):
            if options is not None and (block_q, int(rows)) not in options:
                continue
            pts = [(b["seq_len"], b["estimate_rows"][rows].get("estimate_pct_of_dense")) for b in with_rows
                   if rows in b["estimate_rows"]]
            pts = [(n, y) for n, y in pts if y is not None]
            fig.add_trace(go.Scatter(x=[n for n, _ in pts], y=[y for _, y in pts], mode="lines+markers",
                                     name=f"kernel benchmark, {option_label((block_q, int(rows)))} (changes the mask)",
                                     line=dict(dash="dot")))
    fig.add_trace(go.Scatter(x=list(AUTHORS_OVERHEAD), y=list(AUTHORS_OVERHEAD.values()), mode="lines+markers",
                             name="authors (RTX 4090, INT4, vs FA2)", line=dict(color="grey", dash="dash")))
    fig.add_hline(y=SALE_BUDGET_PCT, line=dict(color="red", dash="dash"), annotation_text="SALE budget 11%")
    fig.update_yaxes(title="quantize + select, % of fastest dense", rangemode="tozero")
    fig.update_layout(title="Estimation overhead", legend=dict(font=dict(size=10)), height=480)
    return _length_axis(fig)


def speedup_figure(points, summaries=()) -> go.Figure:
    """SALE's speedup over the fastest dense attention by length, one line per threshold."""
    fig = go.Figure()
    for label, ps in _by_series(points).items():
        fig.add_trace(go.Scatter(x=[p["seq_len"] for p in ps], y=[p["speedup"] for p in ps], mode="lines+markers",
                                 name=label, customdata=[[p["density"], p.get("rel_l1")] for p in ps],
                                 hovertemplate="N=%{x}<br>speedup %{y:.2f}x<br>density %{customdata[0]:.3f}"
                                               "<br>rel.L1 %{customdata[1]:.4f}"))
    fig.add_hline(y=1.0, line=dict(color="black", dash="dash"), annotation_text="break-even")
    fig.update_yaxes(title="speedup over fastest dense (x)", rangemode="tozero")
    fig.update_layout(title="SALE end to end vs the fastest dense attention", legend=dict(font=dict(size=10)),
                      height=480)
    return _length_axis(fig)


def break_even_rows(summaries) -> list[dict]:
    rows = []
    for s in summaries:
        for tau, n in s["break_even"].items():
            rows.append({"run_id": s["run_id"], "gpu": s.get("gpu"), "threshold": float(tau),
                         "break_even_tokens": n, "reached": n is not None})
    return rows


def breakdown_figure(points, threshold, normalize=False, option=EXACT, run_id=None) -> go.Figure:
    """Per-stage times (stacked, with min-max spread on the total) beside every dense baseline, for one
    threshold and configuration (block_q, estimate_rows or 0), of one run (default: the latest run that
    has them)."""
    ps = [p for p in _ok(points) if p["threshold"] == threshold and option_of(p) == option]
    run_id = run_id or (max(ps, key=lambda p: p["time"])["run_id"] if ps else None)
    ps = sorted((p for p in ps if p["run_id"] == run_id), key=lambda p: p["seq_len"])
    x = [f"N={p['seq_len']}" for p in ps]
    scale = [100.0 / p["dense_ms"] if normalize and p["dense_ms"] else 1.0 for p in ps]
    fig = go.Figure()
    base = [0.0] * len(ps)
    for stage in ("quantize", "select", "attend"):
        y = [p[f"{stage}_ms"] * s for p, s in zip(ps, scale)]
        spread = [p.get(f"{stage}_spread_ms") or [p[f"{stage}_ms"]] * 2 for p in ps]
        fig.add_trace(go.Bar(x=x, y=y, base=base, name=stage, offsetgroup="sale", marker_color=STAGE_COLORS[stage],
                             customdata=[[lo * s, hi * s] for (lo, hi), s in zip(spread, scale)],
                             hovertemplate=f"{stage}: %{{y:.3f}} (min %{{customdata[0]:.3f}}, max %{{customdata[1]:.3f}})"))
        base = [b + yy for b, yy in zip(base, y)]
    backends = sorted({b for p in ps for b in p.get("dense_all_ms", {})})
    for b in backends:
        fig.add_trace(go.Bar(x=x, y=[(p.get("dense_all_ms", {}).get(b) or float("nan")) * s for p, s in zip(ps, scale)],
                             name=f"dense: {b}", offsetgroup=b, opacity=0.6))
    fig.update_layout(barmode="group", title=f"Stage breakdown at tau={threshold:g}"
                      + ("" if option == EXACT else f", {option_label(option)}"),
                      yaxis_title="% of fastest dense" if normalize else "ms (median)",
                      legend=dict(orientation="h", yanchor="top", y=-0.15))
    return fig   # a linear axis: stacked stages keep their true proportions


def efficiency_figure(bench_attend) -> go.Figure:
    """Block-sparse attention efficiency (density x cuDNN ms / sparse ms) by density, per length and mask
    source (the latest run of each): masks drawn at random (solid; the oldest traces have only these)
    or SALE's own masks on the structured workload (dashed); where the run also timed the int8-QK option
    (``SaleConfig(int8_qk=True)``), its efficiency as a dotted line of its own."""
    fig = go.Figure()
    rows = [r for r in bench_attend if r.get("kind") == "sparse_at_density"]
    source = lambda r: r.get("mask_source") or "random"
    for bq, n, src in sorted({(r.get("block_q") or 64, r["seq_len"], source(r)) for r in rows}):
        same = [r for r in rows if r["seq_len"] == n and (r.get("block_q") or 64) == bq and source(r) == src]
        latest = max(same, key=lambda r: r.get("time") or "")["run_id"]
        rs = sorted((r for r in same if r["run_id"] == latest), key=lambda r: r["density"])
        name = f"N={n}, {src} masks" + ("" if bq == 64 else f", block_q={bq}")
        for prefix, label, dash in (("", "", "solid" if src == "random" else "dash"), ("int8_", ", int8 q.k", "dot")):
            forms = [r for r in rs if r.get(f"{prefix}efficiency") is not None]
            if not forms:
                continue
            fig.add_trace(go.Scatter(
                x=[r["density"] for r in forms], y=[r[f"{prefix}efficiency"] for r in forms], mode="lines+markers",
                name=name + label, customdata=[[r.get(f"{prefix}best_tile", "?")] for r in forms],
                hovertemplate="density %{x:.3f}<br>efficiency %{y:.3f}<br>tile %{customdata[0]}",
                line=dict(dash=dash, width=2 if bq == 64 else 1)))
    fig.add_hline(y=0.9, line=dict(color="red", dash="dash"), annotation_text="target 0.9")
    fig.update_layout(title="Computation pass: efficiency per kept block vs cuDNN",
                      xaxis_title="density (kept causal blocks / causal blocks)", yaxis_title="efficiency")
    fig.update_xaxes(type="log")
    return fig


def pool(a: np.ndarray, max_cells: int = 256, how: str = "max") -> np.ndarray:
    """Pool a 2-D map to at most max_cells per side (never N x N in the browser)."""
    fy = max(1, math.ceil(a.shape[0] / max_cells))
    fx = max(1, math.ceil(a.shape[1] / max_cells))
    if fy == fx == 1:
        return a
    pad = ((0, (-a.shape[0]) % fy), (0, (-a.shape[1]) % fx))
    fill = -np.inf if how == "max" else np.nan
    p = np.pad(a.astype(float), pad, constant_values=fill).reshape(a.shape[0] // fy + (pad[0][1] > 0), fy, -1, fx)
    return np.nanmax(p, axis=(1, 3)) if how == "max" else np.nanmean(p, axis=(1, 3))


def kept_blocks(arrays: dict, head: int, tau: float) -> np.ndarray:
    """The mask at threshold tau from stored block scores: score > ln tau, or always computed."""
    always = arrays["always"].astype(bool)
    if tau <= 0:
        return always | arrays["candidate"].astype(bool)
    return always | (arrays[f"head{head}.log_ras"] > math.log(tau))


def whatif_density(arrays: dict, head: int, tau: float) -> float:
    causal = arrays["always"].astype(bool) | arrays["candidate"].astype(bool)
    return float((kept_blocks(arrays, head, tau) & causal).sum() / causal.sum())


def attention_map_figure(meta: dict, arrays: dict, head: int, kind: str, tau: float,
                         query_blocks: tuple[int, int] | None = None, overlay: bool = True) -> go.Figure:
    """One head's block-level map: "exact" or "estimate" (log10 of the mean attention mass per block),
    or "log_ras" (max log Relative Attention Score per candidate block), kept blocks overlaid."""
    key = {"exact": f"head{head}.exact", "estimate": f"head{head}.estimate", "log_ras": f"head{head}.log_ras"}[kind]
    a = arrays[key].astype(float)
    if kind in ("exact", "estimate"):
        causal = arrays["always"].astype(bool) | arrays["candidate"].astype(bool)
        a = np.where(causal, np.log10(np.clip(a, 1e-8, None)), np.nan)  # blank above the diagonal
    a = np.where(np.isfinite(a), a, np.nan)
    kept = kept_blocks(arrays, head, tau)
    lo, hi = query_blocks or (0, a.shape[0])
    a, kept = a[lo:hi], kept[lo:hi]
    a_p = pool(np.nan_to_num(a, nan=-np.inf), how="max")
    a_p = np.where(np.isfinite(a_p), a_p, np.nan)
    bq, bk = meta["block_q"], meta["block_k"]
    fy = max(1, math.ceil(a.shape[0] / 256))
    fx = max(1, math.ceil(a.shape[1] / 256))
    y = [(lo + i * fy) * bq for i in range(a_p.shape[0])]
    x = [j * fx * bk for j in range(a_p.shape[1])]
    title = {"exact": "exact attention (log10 mass per block)", "estimate": "4-bit estimate (log10 mass per block)",
             "log_ras": "max log Relative Attention Score per block"}[kind]
    fig = go.Figure(go.Heatmap(z=a_p, x=x, y=y, colorscale="Viridis", colorbar=dict(title=kind),
                               hovertemplate="query %{y}, key %{x}: %{z:.2f}<extra></extra>"))
    if overlay:
        kp = pool(kept.astype(float), how="max")
        ys, xs = np.nonzero(kp > 0)
        fig.add_trace(go.Scatter(x=[x[j] for j in xs], y=[y[i] for i in ys], mode="markers", name=f"kept at tau={tau:g}",
                                 marker=dict(symbol="square-open", size=4, color="red"), hoverinfo="skip"))
    fig.update_yaxes(autorange="reversed", title="query token")
    fig.update_xaxes(title="key token")
    fig.update_layout(title=f"head {head}: {title}", height=520)
    return fig


def density_error_figure(maps: dict, points=()) -> go.Figure:
    """Density against output error (relative L1 vs dense): per captured head over the threshold grid,
    and the sweep's points."""
    fig = go.Figure()
    for name, (meta, arrays) in maps.items():
        for h in meta["heads"]:
            fig.add_trace(go.Scatter(x=arrays[f"head{h}.density"], y=arrays[f"head{h}.rel_l1"], mode="lines+markers",
                                     name=f"{name} head {h}", customdata=arrays["tau_grid"],
                                     hovertemplate="tau=%{customdata:g}<br>density %{x:.3f}<br>rel.L1 %{y:.4f}"))
    for opt in sorted({option_of(p) for p in _ok(points)}):
        ok = [p for p in _ok(points) if p.get("rel_l1") is not None and option_of(p) == opt]
        if not ok:
            continue
        fig.add_trace(go.Scatter(x=[p["density"] for p in ok], y=[p["rel_l1"] for p in ok], mode="markers",
                                 name=f"sweep points, {option_label(opt)}", marker=dict(symbol="x"),
                                 customdata=[[p["seq_len"], p["threshold"]] for p in ok],
                                 hovertemplate="N=%{customdata[0]} tau=%{customdata[1]}<br>density %{x:.3f}<br>rel.L1 %{y:.4f}"))
    fig.update_layout(title="Density against error", xaxis_title="density", yaxis_title="relative L1 error vs dense")
    fig.update_yaxes(type="log")
    return fig


def thresholds_heatmap(doc: dict) -> go.Figure:
    t = np.asarray(doc["thresholds"], dtype=float)
    z = np.where(t > 0, np.log10(np.where(t > 0, t, 1)), np.nan)
    fig = go.Figure(go.Heatmap(z=z, colorscale="Magma", colorbar=dict(title="log10 tau"),
                               customdata=t, hovertemplate="layer %{y}, head %{x}: tau=%{customdata:.2e}<extra></extra>"))
    dense = np.argwhere(t == 0)
    if len(dense):
        fig.add_trace(go.Scatter(x=dense[:, 1], y=dense[:, 0], mode="markers", name="dense (tau = 0)",
                                 marker=dict(symbol="x", color="white")))
    rows = doc.get("estimate_rows")
    fig.update_layout(title=f"Thresholds: {doc.get('model')} theta={doc.get('theta')} ({doc.get('method')}"
                            + (f", estimate_rows={rows})" if rows else ")"),
                      xaxis_title="head", yaxis_title="layer")
    return fig


def runs(points) -> dict:
    """run_id -> its points."""
    out = defaultdict(list)
    for p in points:
        out[p["run_id"]].append(p)
    return dict(out)


def run_label(points: list) -> str:
    """A run as a person reads it: date, GPU, backend and option, commit (the id last)."""
    p = min(points, key=lambda x: x["time"])
    gpu = str(p["gpu"]).replace("NVIDIA ", "")
    return (f"{p['time'][:10]} · {gpu} · {p['backend']}, {option_label(option_of(p))} · "
            f"{(p.get('git_commit') or '?')[:7]} · {len(points)} points ({p['run_id'][:6]})")


def comparable_pair(runs_: dict) -> tuple[str, str] | None:
    """The two runs (ids) sharing the most (N, tau, configuration) points, newer second; None if no two share one."""
    keys = {r: {(p["seq_len"], p["threshold"], option_of(p)) for p in _ok(ps)} for r, ps in runs_.items()}
    newest = {r: max(p["time"] for p in ps) for r, ps in runs_.items()}
    best, pair = 0, None
    ids = list(runs_)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            shared = len(keys[a] & keys[b])
            if shared > best:
                best, pair = shared, tuple(sorted((a, b), key=lambda r: newest[r]))
    return pair


def compare_runs(a: list, b: list) -> list[dict]:
    """Per (N, tau) present in both runs: their times and the deltas."""
    index_b = {(p["seq_len"], p["threshold"], option_of(p)): p for p in _ok(b)}
    rows = []
    for p in sorted(_ok(a), key=lambda p: (p["seq_len"], p["threshold"], option_of(p))):
        q = index_b.get((p["seq_len"], p["threshold"], option_of(p)))
        if q is None:
            continue
        rows.append({"seq_len": p["seq_len"], "threshold": p["threshold"], "configuration": option_label(option_of(p)),
                     "sale_ms_a": p["sale_ms"],
                     "sale_ms_b": q["sale_ms"], "sale_delta_pct": 100 * (q["sale_ms"] / p["sale_ms"] - 1),
                     "dense_ms_a": p["dense_ms"], "dense_ms_b": q["dense_ms"], "speedup_a": p["speedup"],
                     "speedup_b": q["speedup"], "density_a": p["density"], "density_b": q["density"]})
    return rows


def run_context(points: list) -> dict:
    """GPU and software of a run, from its first point."""
    p = points[0]
    ctx = p.get("gpu_context", {})
    before = ctx.get("before", {}) if isinstance(ctx, dict) else {}
    return {"run_id": p["run_id"], "gpu": p["gpu"], "git_commit": p.get("git_commit"), "backend": p["backend"],
            "workload": p["workload"], "shape": f"B={p['batch']} Hq={p['num_q_heads']} Hkv={p['num_kv_heads']} "
                                                 f"D={p['head_dim']} {p['dtype']}",
            "driver": before.get("driver"), "sm_clock_max_mhz": before.get("sm_clock_max_mhz"),
            "power_limit_w": before.get("power_limit_w"), **(ctx.get("software", {}) if isinstance(ctx, dict) else {})}


def accuracy_rows(accuracy) -> tuple[list[dict], list[dict]]:
    """(held-out rows, needle rows) of real-model accuracy records of SALE at calibrated thresholds (the methods
    comparison's records, which carry `selection`, are left to the methods page), sorted by model and theta."""
    own = [r for r in accuracy if not r.get("selection")]
    key = lambda r: (_short_model(r.get("model")), r["theta"], r["seq_len"], r.get("depth") or 0.0)
    held = sorted((r for r in own if r["kind"] == "held_out"), key=key)
    needles = sorted((r for r in own if r["kind"] == "needle"), key=key)
    return ([{"model": _short_model(r.get("model")), "theta": r["theta"], "method": r.get("method"),
              "estimate_rows": r.get("estimate_rows"), "tokens": r["seq_len"], "density": r["density"],
              "next_token_agreement": r["next_token_agreement"], "kl_dense_sale": r["kl_dense_sale"],
              "perplexity_dense": r["perplexity_dense"], "perplexity_sale": r["perplexity_sale"],
              "backend": r.get("backend")} for r in held],
            [{"model": _short_model(r.get("model")), "theta": r["theta"], "tokens": r["seq_len"], "depth": r["depth"],
              "dense_correct": r["dense_correct"], "sale_correct": r["sale_correct"],
              "dense_answer_logprob": r.get("dense_answer_logprob"),
              "sale_answer_logprob": r.get("sale_answer_logprob"), "density": r["density"]} for r in needles])


def _short_model(name) -> str:
    """The model's name without its file details ("SmolLM2-135M-Instruct (Q4_1 GGUF, ...)" -> "SmolLM2-135M-Instruct")."""
    return str(name).split(" (")[0] if name else "model"


def accuracy_figure(accuracy) -> go.Figure:
    """Real-model accuracy against density at calibrated thresholds: next-token agreement and KL(dense || SALE)
    on held-out text, one colour per model (each at its own held-out length)."""
    held, _ = accuracy_rows(accuracy)
    fig = go.Figure()
    for model in dict.fromkeys(r["model"] for r in held):
        rows = [r for r in held if r["model"] == model]
        n = max(r["tokens"] for r in rows)
        fig.add_trace(go.Scatter(x=[r["density"] for r in rows], y=[r["next_token_agreement"] for r in rows],
                                 mode="markers+text", text=[f"theta={r['theta']:g}" + (f", rows={r['estimate_rows']}" if
                                                            r["estimate_rows"] else "") for r in rows],
                                 textposition="top center", name=f"{model}, {n // 1024}K: agreement"))
        fig.add_trace(go.Scatter(x=[r["density"] for r in rows], y=[r["kl_dense_sale"] for r in rows], mode="markers",
                                 name=f"{model}, {n // 1024}K: KL", yaxis="y2", marker=dict(symbol="diamond")))
    fig.update_layout(title="Calibrated thresholds on real models: accuracy against density (held-out text)",
                      xaxis_title="density", yaxis=dict(title="next-token agreement with dense"),
                      yaxis2=dict(title="KL(dense || SALE)", overlaying="y", side="right"))
    return fig


def estimate_tradeoff_figure(rows) -> go.Figure:
    """Density against output error (relative L1 vs dense) of SALE with the exact estimate and with
    each estimate_rows option, one point per threshold (means over the heads of each source)."""
    fig = go.Figure()
    groups = defaultdict(list)
    for r in rows:
        groups[(r.get("model") or r.get("workload") or r.get("source"), r["seq_len"], r["estimate_rows"] or 0)].append(r)
    for (source, n, opt), rs in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        taus = sorted({r["threshold"] for r in rs})
        dens = [float(np.mean([r["density"] for r in rs if r["threshold"] == t])) for t in taus]
        err = [float(np.mean([r["rel_l1_vs_dense"] for r in rs if r["threshold"] == t])) for t in taus]
        fig.add_trace(go.Scatter(x=dens, y=err, mode="lines+markers", name=f"{source} N={n}: {option_label((64, opt))}",
                                 customdata=taus, hovertemplate="tau=%{customdata:g}<br>density %{x:.3f}<br>rel.L1 %{y:.4f}"))
    fig.update_layout(title="Reduced-work estimate against the exact one: density against error (lower left is better)",
                      xaxis_title="density (kept causal blocks)", yaxis_title="relative L1 error vs dense")
    fig.update_yaxes(type="log")
    return fig


def estimate_tradeoff_rows(rows) -> list[dict]:
    """Means over heads per (source, N, option, threshold)."""
    groups = defaultdict(list)
    for r in rows:
        groups[(str(r.get("model") or r.get("workload") or r.get("source")), r["seq_len"], r["estimate_rows"] or 0,
                r["threshold"])].append(r)
    out = []
    for (source, n, opt, tau), rs in sorted(groups.items()):
        out.append({"source": source, "seq_len": n, "estimate_rows": opt or None, "threshold": tau, "heads": len(rs),
                    **{f: float(np.mean([r[f] for r in rs])) for f in
                       ("density", "candidate_recall_vs_exact", "recall_mean", "rel_l1_vs_dense")},
                    "recall_min": float(min(r["recall_min"] for r in rs))})
    return out


def speed_error_figure(points, seq_len: int) -> go.Figure:
    """End-to-end speedup against output error at one length, one line per estimate option (each point
    a threshold): the option whose line lies higher at a given error is the one to run."""
    fig = go.Figure()
    ok = [p for p in _ok(points) if p["seq_len"] == seq_len and p.get("rel_l1")]
    latest = {}
    for p in sorted(ok, key=lambda p: p["time"]):
        latest[(option_of(p), p["threshold"])] = p
    for opt in sorted({o for o, _ in latest}):
        ps = sorted((p for (o, _), p in latest.items() if o == opt), key=lambda p: p["rel_l1"])
        fig.add_trace(go.Scatter(x=[p["rel_l1"] for p in ps], y=[p["speedup"] for p in ps], mode="lines+markers",
                                 name=option_label(opt), customdata=[[p["threshold"], p["density"]] for p in ps],
                                 hovertemplate="tau=%{customdata[0]:g}, density %{customdata[1]:.3f}<br>"
                                               "rel.L1 %{x:.4f}<br>speedup %{y:.2f}x"))
    fig.add_hline(y=1.0, line=dict(color="black", dash="dash"), annotation_text="break-even")
    fig.update_xaxes(type="log", title="output error: relative L1 vs dense")
    fig.update_yaxes(title="speedup over the fastest dense attention (x)", rangemode="tozero")
    fig.update_layout(title=f"Speed against accuracy at N={seq_len}: exact estimate and reduced-work options")
    return fig


def matched_error_rows(points) -> list[dict]:
    """Each option's speedup at the exact estimate's error, per length and threshold (profiler.analysis),
    for the lengths where some option was measured."""
    with_options = {p["seq_len"] for p in _ok(points) if option_of(p) != EXACT}
    return [r for r in speedup_at_matched_error(points) if r["seq_len"] in with_options]


def verdict(bench_attend: list, bench_select: list, seq_len: int = 65536, threshold: float = 0.01,
            shape: tuple = (32, 8, 128)) -> dict | None:
    """The Overview's one-sentence answer, from the newest GPU run of SALE end to end with its defaults (exact
    q . k, exact estimate, 64-row blocks) at `threshold`, the attention shape (query heads, kv heads, head dim;
    Llama-3.1-8B's by default) and the length closest to `seq_len`: {"sentence", "gpu", "seq_len", "speedup",
    "rel_l1", "estimate_pct", "file", "time"}; None without such records."""
    e2e = [r for r in bench_attend if r.get("kind") == "sale_end_to_end" and not r.get("int8_qk")
           and (r.get("num_q_heads", 32), r.get("num_kv_heads", 8), r.get("head_dim", 128)) == tuple(shape)
           and r.get("estimate_rows") in (None, 0) and r.get("block_q", 64) == 64 and r.get("threshold") == threshold
           and isinstance(r.get("speedup"), (int, float)) and str(r.get("gpu", "cpu")).lower() != "cpu"]
    if not e2e:
        return None
    newest_time = max(r.get("time", "") for r in e2e)
    run = [r for r in e2e if r.get("run_id") == next(x for x in e2e if x.get("time", "") == newest_time).get("run_id")]
    rec = min(run, key=lambda r: (abs(r["seq_len"] - seq_len), -r["seq_len"]))
    gpu = str(rec.get("gpu", "")).replace("NVIDIA ", "")
    n = rec["seq_len"]
    est = rec.get("overhead_pct")
    sel = [r for r in bench_select if r.get("seq_len") == n and r.get("block_q", 64) == 64
           and r.get("gpu") == rec.get("gpu") and isinstance(r.get("estimate_pct_of_dense"), (int, float))]
    if sel:
        est = max(sel, key=lambda r: r.get("time", ""))["estimate_pct_of_dense"]
    faster = rec["speedup"] >= 1
    words = f"{rec['speedup']:.2f}x faster than" if faster else f"{1 / rec['speedup']:.2f}x slower than"
    err = rec.get("rel_l1_vs_dense")
    sentence = (f"On an {gpu} at {n // 1024}K tokens, SALE with its exact estimate is {words} the fastest dense "
                f"attention at tau {threshold:g}"
                + (f", with {100 * err:.1f}% output error (relative L1)" if isinstance(err, (int, float)) else "")
                + (f"; the estimate alone is {est:.0f}% of dense." if isinstance(est, (int, float)) else "."))
    return {"sentence": sentence, "gpu": gpu, "seq_len": n, "speedup": rec["speedup"], "rel_l1": err,
            "estimate_pct": est, "file": rec.get("_file"), "time": rec.get("time")}


def methods_figure(records: list, source: str, seq_len: int, masks_only: bool = False) -> go.Figure:
    """Speedup over the fastest dense against output error (relative L1), one line per selection method through
    its knob values, for one input (source, length), each method from the newest run that measured it: the Pareto
    view. masks_only: the speedup of the attend stage alone (dense ms / attend ms), the selection's cost left out:
    how few blocks each method's masks keep for an error."""
    recs = [r for r in records if r.get("source") == source and r.get("seq_len") == seq_len
            and isinstance(r.get("speedup"), (int, float)) and isinstance(r.get("rel_l1"), (int, float))
            and (not masks_only or (r.get("dense_ms") and r.get("attend_ms")))]
    gain = (lambda r: r["dense_ms"] / r["attend_ms"]) if masks_only else (lambda r: r["speedup"])
    newest = {}   # per method, the newest run that measured it here (methods may come from separate runs)
    for r in recs:
        if r.get("time", "") > newest.get(r["method"], ("", None))[0]:
            newest[r["method"]] = (r.get("time", ""), r["run_id"])
    recs = [r for r in recs if r["run_id"] == newest[r["method"]][1]]
    fig = go.Figure()
    for method in sorted({r["method"] for r in recs}):
        pts = sorted((r for r in recs if r["method"] == method), key=lambda r: r["rel_l1"])
        fig.add_trace(go.Scatter(x=[max(r["rel_l1"], 1e-6) for r in pts], y=[gain(r) for r in pts],
                                 mode="lines+markers", name=method,
                                 line=dict(width=4 if method == "sale" else 2),
                                 customdata=[[r["knob_name"], r["knob"], r["density"]] for r in pts],
                                 hovertemplate="%{customdata[0]}=%{customdata[1]}: speedup %{y:.2f}x, rel.L1 %{x:.4f}, "
                                               "density %{customdata[2]:.3f}"))
    fig.add_hline(y=1.0, line_dash="dot", annotation_text="dense")
    fig.update_xaxes(type="log", title="output error: relative L1 vs dense")
    fig.update_layout(title=f"Selection methods on one computation pass: {source}, N={seq_len}",
                      yaxis_title="speedup over the fastest dense (" + ("attend alone: the masks" if masks_only
                                                                          else "selection + attend") + ")",
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig


PEER_NAMES = {"project": "ours (SALE's computation pass)", "flex": "FlexAttention (Triton)",
              "flex_flash": "FlexAttention (FlashAttention-4)", "cudnn_bsa": "cuDNN block-sparse"}


def peers_rows(records: list, seq_len: int, grain: str) -> list:
    """The newest run's records at one length and mask grain, by density."""
    recs = [r for r in records if r.get("seq_len") == seq_len and r.get("mask_grain") == grain]
    if recs:
        newest = max(recs, key=lambda r: r.get("time", ""))["run_id"]
        recs = [r for r in recs if r["run_id"] == newest]
    return sorted(recs, key=lambda r: r["density"])


def peers_figure(records: list, seq_len: int, grain: str, metric: str = "ms") -> go.Figure:
    """Each implementation's time (metric "ms") or efficiency against cuDNN dense (metric "efficiency": density x
    cuDNN dense ms / ms) against the mask's density, ours highlighted, at one length and mask grain."""
    rows = peers_rows(records, seq_len, grain)
    fig = go.Figure()
    names = ["project"] + sorted({p for r in rows for p in r.get("peers_ms", {})})
    for name in names:
        pts = []
        for r in rows:
            ms = r["project_ms"] if name == "project" else r.get("peers_ms", {}).get(name)
            if ms:
                pts.append((r["density"], ms if metric == "ms" else r["density"] * r["cudnn_ms"] / ms
                            if r.get("cudnn_ms") else None))
        pts = [p for p in pts if p[1] is not None]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                     name=PEER_NAMES.get(name, name), line=dict(width=5 if name == "project" else 2)))
    # the yardstick as a trace, not a shape: a shape's annotation on a log axis reads y as an exponent
    densities = [r["density"] for r in rows]
    cudnn = [r["cudnn_ms"] for r in rows if r.get("cudnn_ms")]
    if densities and (cudnn or metric == "efficiency"):
        level = cudnn[0] if metric == "ms" else 1.0
        fig.add_trace(go.Scatter(x=[min(densities), max(densities)], y=[level, level], mode="lines",
                                 name="cuDNN dense" if metric == "ms" else "cuDNN dense's pace",
                                 line=dict(dash="dot", color="black", width=1)))
    fig.update_xaxes(type="log", title="density (share of causal blocks kept)")
    fig.update_yaxes(type="log" if metric == "ms" else "linear",
                     title="ms (median, graph replay)" if metric == "ms" else "efficiency: density x cuDNN dense ms / ms")
    fig.update_layout(title=f"Block-sparse kernels on the same {grain} masks, N={seq_len}: "
                            + ("time" if metric == "ms" else "speed per computed block against cuDNN dense"),
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig
