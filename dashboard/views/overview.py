import streamlit as st

from dashboard import figures
from dashboard.ui import figure, need, table, traces
from profiler.analysis import option_label, option_of

st.title("Does SALE pay off?")
t = traces()
answer = figures.verdict(t.bench_attend, t.bench_select)
if answer:
    st.info(answer["sentence"])
    st.caption(f"From {answer['file']} ({answer['time'][:10]}), the structured synthetic workload, Llama-3.1-8B "
               "attention shapes. Options that change the mask (estimate_rows, int8 q . k) are labelled as such below.")
if need(bool(t.points or t.bench_select), "No sweep traces here. Run `python -m profiler sweep` on your GPU, or pick "
                                          "another folder in the sidebar."):
    ok = [p for p in t.points if p.get("error") is None]
    options = sorted({option_of(p) for p in ok})
    # SALE's defaults and the reduced-work estimate the README recommends; the others one click away
    default = [o for o in options if o in ((64, 0), (64, 16))] or options
    chosen = st.multiselect("configuration", options, default=default, format_func=option_label,
                            help="SALE's defaults (exact estimate, 64-row blocks); estimate_rows=r: every (block_q/r)-th "
                                 "query row estimated (less work, a subset of the exact mask); block_q=128: 128-row mask "
                                 "blocks. Accuracy at equal error is on Threshold tuning.")
    shown = [p for p in t.points if option_of(p) in chosen]
    ok = [p for p in shown if p.get("error") is None]
    if ok:
        latest = max(ok, key=lambda p: p["time"])
        ctx = figures.run_context([latest])
        c = st.columns(4)
        c[0].metric("GPU", ctx["gpu"])
        c[1].metric("fastest dense", str(latest["dense_backend"]))
        exact = [p for p in ok if option_of(p) == (64, 0)] or ok   # the headline is SALE's own estimate
        best = max(exact, key=lambda p: p["speedup"] or 0)
        where = f"N={best['seq_len']}, tau={best['threshold']}, {option_label(option_of(best))}"
        c[2].metric(f"best sweep speedup, {option_label(option_of(best))}", f"{best['speedup']:.2f}x", help=where + (
            f"; output error rel.L1 {best['rel_l1']:.3f} vs dense" if best.get("rel_l1") is not None else ""))
        lowest = min(exact, key=lambda p: p["overhead_pct"] or 1e9)
        c[3].metric(f"lowest estimate overhead, {option_label(option_of(lowest))}", f"{lowest['overhead_pct']:.1f}%",
                    help=f"SALE's budget: about 11%. N={lowest['seq_len']}, {option_label(option_of(lowest))}")
        st.caption(f"Best speedup: {where}" + (f", rel.L1 {best['rel_l1']:.3f}" if best.get("rel_l1") is not None else "")
                   + ". Compare options at equal error on Threshold tuning.")
    figure(figures.overhead_figure(shown, t.bench_select, options=set(chosen)), "overhead")
    figure(figures.speedup_figure(shown, t.summaries), "speedup")
    st.subheader("Break-even length")
    table(figures.break_even_rows(t.summaries), "break_even")
    st.subheader("What the runs used")
    table([figures.run_context(ps) for ps in figures.runs(t.points).values()], "runs_context")
    failed = [p for p in t.points if p.get("error")]
    if failed:
        st.subheader("Failed points")
        table(failed, "failed", ["run_id", "seq_len", "threshold", "error"])
