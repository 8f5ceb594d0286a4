import streamlit as st

from dashboard import figures
from dashboard.ui import need, table, traces

st.title("Compare two runs")
t = traces()
runs = figures.runs(t.points)
if need(len(runs) >= 1, "No sweep runs here."):
    ids = sorted(runs, key=lambda r: max(p["time"] for p in runs[r]))
    pair = figures.comparable_pair(runs) or (ids[0], ids[-1])   # by default two runs that share points
    label = {r: figures.run_label(runs[r]) for r in ids}
    c1, c2 = st.columns(2)
    a = c1.selectbox("run A", ids, index=ids.index(pair[0]), format_func=label.get)
    b = c2.selectbox("run B", ids, index=ids.index(pair[1]), format_func=label.get)
    ctx_a, ctx_b = figures.run_context(runs[a]), figures.run_context(runs[b])
    table([{"field": k, "A": str(ctx_a.get(k)), "B": str(ctx_b.get(k))} for k in ctx_a], "runs_context_ab")
    table(figures.compare_runs(runs[a], runs[b]), "runs_delta")
