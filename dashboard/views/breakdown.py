import streamlit as st

from dashboard import figures
from dashboard.ui import figure, need, table, traces
from profiler.analysis import option_label, option_of

st.title("Where the time goes")
t = traces()
ok = [p for p in t.points if p.get("error") is None]
if need(bool(ok), "No sweep points to break down."):
    thresholds = sorted({p["threshold"] for p in ok})
    options = sorted({option_of(p) for p in ok})
    c1, c2, c3 = st.columns(3)
    tau = c1.selectbox("threshold", thresholds, index=len(thresholds) // 2)
    opt = c2.selectbox("configuration", options, format_func=option_label)
    normalize = c3.toggle("as % of the fastest dense attention", value=False)
    runs = sorted({p["run_id"]: p["time"] for p in ok if p["threshold"] == tau and option_of(p) == opt}.items(),
                  key=lambda kv: kv[1], reverse=True)
    run = st.selectbox("run (latest first)", [r for r, _ in runs], format_func=lambda r: f"{r} ({dict(runs)[r][:16]})") \
        if len(runs) > 1 else (runs[0][0] if runs else None)
    key = f"breakdown_tau{tau:g}_bq{opt[0]}_rows{opt[1]}"
    figure(figures.breakdown_figure(ok, tau, normalize, opt, run), key)
    table([p for p in ok if p["threshold"] == tau and option_of(p) == opt and p["run_id"] == run], key,
          ["run_id", "seq_len", "block_q", "estimate_rows", "quantize_ms", "select_ms", "attend_ms", "sale_ms", "dense_ms", "dense_backend",
           "density", "overhead_pct", "speedup", "rel_l1", "recall_mean", "instrumentation_overhead_pct"])
if t.bench_attend:
    st.subheader("Computation pass efficiency")
    figure(figures.efficiency_figure(t.bench_attend), "efficiency")
    table([r for r in t.bench_attend if r.get("kind") == "sale_end_to_end"], "sale_end_to_end",
          ["seq_len", "block_q", "threshold", "quantize_ms", "select_ms", "attend_ms", "sale_ms", "fastest_dense_ms",
           "density", "speedup", "rel_l1_vs_dense"])
    calibrated = [r for r in t.bench_attend if r.get("kind") == "sale_end_to_end_calibrated"]
    if calibrated:
        st.caption("SALE end to end at per-head thresholds calibrated on the same workload (the authors' "
                   "procedure, error < theta x N): the density and speedup that the 3.36x target refers to.")
        table(calibrated, "sale_end_to_end_calibrated",
              ["seq_len", "estimate_rows", "theta", "calibrate_method", "calibrate_len", "density", "quantize_ms",
               "select_ms", "attend_ms", "sale_ms", "fastest_dense_ms", "speedup", "target_speedup", "rel_l1_vs_dense"])
if t.bench_select:
    st.subheader("Selection kernel variants")
    rows = [{"seq_len": r["seq_len"], "block_q": r.get("block_q") or 64, "quantize_ms": r["quantize_ms"], **{f"select[{k}]": v for k, v in r["select_ms"].items()},
             "fastest_dense_ms": r["fastest_dense_ms"], "estimate_pct_of_dense": r["estimate_pct_of_dense"],
             **{f"estimate_rows={o}: {f}": v.get(f) for o, v in (r.get("estimate_rows") or {}).items()
                for f in ("select_ms", "estimate_pct_of_dense", "density", "candidate_recall_vs_exact")}}
            for r in t.bench_select]
    table(rows, "select_variants", list(dict.fromkeys(c for r in rows for c in r)))
    st.caption("estimate_rows=r estimates every (64/r)-th query row: less work, a subset of the exact mask. "
               "Its accuracy cost is on the Thresholds page.")
