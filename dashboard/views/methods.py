import streamlit as st

from dashboard import figures
from dashboard.ui import figure, need, table, traces

st.title("Selection methods: speed against accuracy")
t = traces()
if need(bool(t.bench_methods), "No selection-method benchmarks here. Run `python -m profiler bench-methods` on your "
                               "GPU (or pick another folder in the sidebar)."):
    inputs = sorted({(r["source"], r["seq_len"]) for r in t.bench_methods})
    source, n = st.selectbox("input", inputs, index=len(inputs) - 1, format_func=lambda x: f"{x[0]}, N={x[1]}")
    figure(figures.methods_figure(t.bench_methods, source, n), f"methods_{n}")
    st.caption("Each line follows one method through its knob (SALE: tau; pooled and XAttention: mass; "
               "vertical-slash: top_k; FlexPrefill: gamma). Up and to the left is better. Every method runs the same "
               "computation pass; the methods other than SALE select in plain PyTorch.")
    rows = sorted((r for r in t.bench_methods if r["source"] == source and r["seq_len"] == n),
                  key=lambda r: (r["method"], r["knob"]))
    table(rows, f"methods_{n}", ["method", "knob_name", "knob", "select_ms", "attend_ms", "density", "speedup",
                                 "rel_l1", "rel_l2", "recall", "gpu", "time"])
