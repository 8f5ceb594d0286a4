import streamlit as st

from dashboard import figures
from dashboard.ui import figure, need, table, traces

st.title("Does SALE pay off?")
t = traces()
if need(bool(t.points or t.bench_select), "No sweep traces here. Run `python -m profiler sweep` on your GPU, or pick "
                                          "another folder in the sidebar."):
    ok = [p for p in t.points if p.get("error") is None]
    if ok:
        latest = ok[-1]
        ctx = figures.run_context([latest])
        c = st.columns(4)
        c[0].metric("GPU", ctx["gpu"])
        c[1].metric("fastest dense", str(latest["dense_backend"]))
        best = max(ok, key=lambda p: p["speedup"] or 0)
        c[2].metric("best speedup", f"{best['speedup']:.2f}x", help=f"N={best['seq_len']}, tau={best['threshold']}")
        lowest = min(ok, key=lambda p: p["overhead_pct"] or 1e9)
        c[3].metric("lowest estimate overhead", f"{lowest['overhead_pct']:.1f}%", help="SALE's budget: about 11%")
    figure(figures.overhead_figure(t.points, t.bench_select), "overhead")
    figure(figures.speedup_figure(t.points, t.summaries), "speedup")
    st.subheader("Break-even length")
    table(figures.break_even_rows(t.summaries), "break_even")
    st.subheader("What the runs used")
    table([figures.run_context(ps) for ps in figures.runs(t.points).values()], "runs_context")
    failed = [p for p in t.points if p.get("error")]
    if failed:
        st.subheader("Failed points")
        table(failed, "failed", ["run_id", "seq_len", "threshold", "error"])
